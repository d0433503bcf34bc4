"""Results by a deadline, through `dag.test()` against the emulator: the guard cancels at the switch time and
sends what the batch did not finish to the Messages API; routes; the sync budget; never paying twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag

HEADER = (
    "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator\n"
    "from airflow_provider_claude_batch.operators.claude_batch import SyncPolicy\n"
    "QUICK = SyncPolicy(request_latency=timedelta(seconds=0.5), landing_time=timedelta(seconds=2))\n"
    # The guard's switch time 18 s after the task starts: 40 s - 2 s landing - 10 requests x 2 s, one at a time.
    "GUARD = SyncPolicy(request_latency=timedelta(seconds=2), landing_time=timedelta(seconds=2))\n"
)


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _dag(tmp_path: Path, out: Path, n: int, extra: str) -> str:
    return (
        HEADER
        + f"""
batch = ClaudeBatchOperator(
    task_id="batch", model="claude-sonnet-5-5", max_tokens=32, state_path={str(tmp_path / "state")!r},
    requests=[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": f"item {{i}}"}}]}}}}
              for i in range({n})],
    output_path={str(out)!r}, deferrable=True, poll_interval=0.2, create_policy=FAST{extra})
"""
    )


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "_manifest.json").read_text())


@pytest.mark.slow
def test_the_guard_cancels_at_the_switch_time_and_sends_the_stragglers_to_the_messages_api(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

    real = ClaudeBatchHook.create_message
    calls: list[str] = []

    def create_message(self: ClaudeBatchHook, params: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["custom_id"])
        if len(calls) == 2:  # the worker dies in the sync phase, after the cancel and one answer
            raise SystemExit("worker killed during the sync calls")
        return real(self, params, **kwargs)

    monkeypatch.setattr(ClaudeBatchHook, "create_message", create_message)
    control.configure(processing_seconds=0.3)
    control.set_outcomes({"match": "r[01]", "straggle": True})  # hold the batch in progress until canceled
    out = tmp_path / "out"
    extra = (
        ", deadline=timedelta(seconds=40), sync_concurrency=1, sync_policy=GUARD, retries=1, retry_delay=timedelta(0)"
    )
    result = run_dag(write_dag(dags, "deadline_guard", _dag(tmp_path, out, 10, extra)))
    assert result.task_state("batch") == "success"
    assert len(calls) == 3  # r0 answered, the kill, then only r1: r0 was not sent again
    state = control.state()
    assert state["batches_created"] == 1
    # One cancel (the retry re-attached to the ended batch), and only the stragglers sent, once each.
    assert state["batches"][0]["canceled"] and state["batches"][0]["cancel_calls"] == 1
    assert state["messages_answered"] == {"r0": 1, "r1": 1}
    rows = _rows(out / "results.jsonl")
    assert sorted(rows) == sorted(f"r{i}" for i in range(10))  # one row per custom_id
    assert {k: (r["result_type"], r["route"]) for k, r in rows.items() if k in ("r0", "r1", "r2")} == {
        "r0": ("succeeded", "sync"),
        "r1": ("succeeded", "sync"),
        "r2": ("succeeded", "batch"),
    }
    assert {r["route"] for k, r in rows.items() if k not in ("r0", "r1")} == {"batch"}
    guard = json.loads((out / "rounds" / "round-0" / "_deadline_guard.json").read_text())
    assert guard["batch_ids"] == [state["batches"][0]["id"]] and guard["reason"].startswith("deadline guard")
    manifest = _manifest(out)
    assert [c["round"] for c in manifest["deadline"]["canceled"]] == [0]  # the guard's cancel, on record
    routes, cost = manifest["routes"], manifest["cost"]
    assert (routes["batch"]["requests"], routes["sync"]["requests"]) == (8, 2)
    assert routes["sync"]["counts"]["succeeded"] == 2
    assert [r["route"] for r in manifest["rounds"]] == ["batch", "sync"]
    sync_round = manifest["rounds"][1]
    assert routes["sync"]["usd"] == pytest.approx(sync_round["cost"]["standard_usd"])
    assert cost["paid_usd"] == pytest.approx(routes["batch"]["usd"] + routes["sync"]["usd"])
    # The premium: the stragglers' tokens at the standard price instead of the batch price.
    assert cost["deadline_premium_usd"] == pytest.approx(sync_round["cost"]["standard_usd"] / 2, abs=2e-6)
    assert cost["deadline_premium_usd"] > 0
    assert cost["batch_only_usd"] == pytest.approx(cost["batch_usd"])
    summary = result.xcom("batch")
    assert summary["routes"] == routes and summary["requests"] == 10


def _shape(out: Path, summary: dict[str, Any]) -> tuple[object, ...]:
    rows = list(_rows(out / "results.jsonl").values())
    manifest = _manifest(out)
    return (
        sorted(rows[0]),
        sorted(manifest),
        sorted(manifest["cost"]),
        sorted(manifest["routes"]),
        sorted(summary),
        sorted(p.name for p in out.iterdir()),
    )


def test_route_sync_and_auto_give_the_same_files_manifest_and_xcom_shape_as_batches(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    shapes = {}
    for name, extra in {
        "batch": "",
        "sync": ", route='sync'",
        "auto_below": ", route='auto', sync_below=7",
        "auto_above": ", route='auto', sync_below=6",
    }.items():
        control.reset()
        out = tmp_path / name / "out"
        result = run_dag(write_dag(dags, f"route_{name}", _dag(tmp_path / name, out, 6, extra)))
        assert result.task_state("batch") == "success", name
        state = control.state()
        rows = _rows(out / "results.jsonl")
        sent_alone = name in ("sync", "auto_below")
        assert state["batches_created"] == (0 if sent_alone else 1), name
        assert state["messages_answered"] == ({f"r{i}": 1 for i in range(6)} if sent_alone else {}), name
        assert {r["route"] for r in rows.values()} == {"sync" if sent_alone else "batch"}, name
        assert {r["result_type"] for r in rows.values()} == {"succeeded"}, name
        manifest = _manifest(out)
        assert manifest["routes"]["sync" if sent_alone else "batch"]["requests"] == 6, name
        if sent_alone:  # the standard price, and the premium over what batches would have cost
            assert manifest["cost"]["paid_usd"] == pytest.approx(manifest["cost"]["standard_usd"])
            assert manifest["cost"]["deadline_premium_usd"] == pytest.approx(manifest["cost"]["batch_usd"], abs=2e-6)
            assert {r["service_tier"] for r in rows.values()} == {"standard"}
        shapes[name] = _shape(out, result.xcom("batch"))
    assert shapes["sync"] == shapes["batch"] == shapes["auto_below"] == shapes["auto_above"]


def test_a_retry_in_the_middle_of_the_sync_calls_sends_none_twice(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

    real = ClaudeBatchHook.create_message
    calls: list[str] = []

    def create_message(self: ClaudeBatchHook, params: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["custom_id"])
        if len(calls) == 4:  # the worker dies before its 4th call: three answers are recorded
            raise SystemExit("worker killed during the sync calls")
        return real(self, params, **kwargs)

    monkeypatch.setattr(ClaudeBatchHook, "create_message", create_message)
    out = tmp_path / "out"
    extra = ", route='sync', sync_concurrency=1, retries=1, retry_delay=timedelta(0)"
    result = run_dag(write_dag(dags, "sync_retry", _dag(tmp_path, out, 8, extra)))
    assert result.task_state("batch") == "success"
    assert len(calls) == 9  # 3 answered, 1 killed, then the 5 left: the 3 answered were not sent again
    assert control.state()["messages_answered"] == {f"r{i}": 1 for i in range(8)}
    rows = _rows(out / "results.jsonl")
    assert sorted(rows) == [f"r{i}" for i in range(8)]
    assert {(r["result_type"], r["route"]) for r in rows.values()} == {("succeeded", "sync")}


def test_max_sync_cost_usd_stops_sending_and_reports_the_rest_as_budget_exhausted(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    extra = ", route='sync', sync_concurrency=1, max_sync_cost_usd=0.0004"
    result = run_dag(write_dag(dags, "sync_budget", _dag(tmp_path, out, 10, extra)))
    assert result.task_state("batch") == "success"
    answered = control.state()["messages_answered"]
    rows = _rows(out / "results.jsonl")
    sent = {k for k, r in rows.items() if r["result_type"] == "succeeded"}
    stopped = {k for k, r in rows.items() if r["error_type"] == "sync_budget_exhausted"}
    assert set(answered) == sent and 1 <= len(sent) < 10
    assert sent | stopped == set(rows) and len(rows) == 10
    assert {rows[k]["result_type"] for k in stopped} == {"errored"}
    manifest = _manifest(out)
    assert manifest["cost"]["paid_usd"] <= 0.0004
    assert manifest["error_types"] == {"sync_budget_exhausted": len(stopped)}
    assert set(_rows(out / "failures.jsonl")) == stopped


def test_a_deadline_not_even_the_messages_api_can_meet_fails_before_any_create(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    extra = ", deadline=timedelta(seconds=3), sync_policy=SyncPolicy(request_latency=timedelta(seconds=5)), retries=2"
    result = run_dag(write_dag(dags, "deadline_unmeetable", _dag(tmp_path, out, 10, extra)))
    assert result.task_state("batch") == "failed"
    state = control.state()
    assert state["batches_created"] == 0 and state["messages_answered"] == {}
    assert not (out / "_manifest.json").exists()


def test_the_sync_sender_waits_out_429_and_529_and_never_resends_an_answered_error(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    # One call in flight at a time (the rest get 429 + retry-after), two overloaded answers on top,
    # and one request the API refuses as invalid (answered: not sent again).
    control.configure(messages_max_in_flight=1, messages_latency_seconds=0.1)
    control.inject({"endpoint": "messages", "status": 529, "count": 2})
    control.set_outcomes({"match": "r2", "outcome": "errored", "error_type": "invalid_request_error"})
    out = tmp_path / "out"
    result = run_dag(write_dag(dags, "sync_rate_limited", _dag(tmp_path, out, 6, ", route='sync', sync_concurrency=3")))
    assert result.task_state("batch") == "success"
    assert control.state()["messages_answered"] == {f"r{i}": 1 for i in range(6)}
    rows = _rows(out / "results.jsonl")
    assert {k: r["result_type"] for k, r in rows.items()} == {
        **{f"r{i}": "succeeded" for i in range(6) if i != 2},
        "r2": "errored",
    }
    assert rows["r2"]["error_type"] == "invalid_request_error" and rows["r2"]["route"] == "sync"
    assert set(_rows(out / "failures.jsonl")) == {"r2"}


def test_an_output_type_lands_typed_and_validated_columns_on_the_sync_route_too(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    """route='sync' with an output_type: the same typed columns and verdicts as a batch round."""
    control.set_outcomes({"match": "r1", "invalid_output": True})
    out = tmp_path / "out"
    extra = ", route='sync', output_type={'type': 'object', 'properties': {'label': {'type': 'string', 'enum': ['yes', 'no']}}, 'required': ['label']}"
    result = run_dag(write_dag(dags, "route_sync_structured", _dag(tmp_path, out, 4, extra)))
    assert result.task_state("batch") == "success"
    rows = _rows(out / "results.jsonl")
    assert all(rows[k]["label"] in ("yes", "no") for k in ("r0", "r2", "r3"))
    assert rows["r1"]["error_type"] == "invalid_output" and rows["r1"]["label"] is None
    assert {r["route"] for r in rows.values()} == {"sync"}
    structured = _manifest(out)["structured_output"]
    assert (structured["validated"], structured["invalid_output"]) == (3, 1)


def test_the_task_decorator_takes_the_route_and_deadline_parameters(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "decorated_route",
        f"""
        from airflow.sdk import task

        @task.claude_batch(output_path={str(out)!r}, model="claude-haiku-5-5", max_tokens=16,
                           state_path={str(tmp_path / "state")!r}, route="auto", sync_below=10,
                           deadline="{{{{ dag_run.start_date + macros.timedelta(hours=2) }}}}")
        def questions(count):
            return [{{"custom_id": f"q{{i}}", "params": {{"messages": [{{"role": "user", "content": f"Q{{i}}?"}}]}}}}
                    for i in range(count)]

        questions(3)
    """,
    )
    result = run_dag(dag)
    assert result.task_state("questions") == "success"
    assert control.state()["batches_created"] == 0
    assert control.state()["messages_answered"] == {"q0": 1, "q1": 1, "q2": 1}
    assert {r["route"] for r in _rows(out / "results.jsonl").values()} == {"sync"}
    manifest = _manifest(out)
    assert manifest["deadline"]["canceled"] == [] and manifest["routes"]["sync"]["requests"] == 3


def test_the_results_operator_sends_what_is_left_to_the_messages_api_when_no_batch_round_fits(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes({"match": "r2", "outcome": "errored", "error_type": "overloaded_error", "times": 1})
    out = tmp_path / "out"
    requests = (
        '[{"custom_id": f"r{i}", "params": {"messages": [{"role": "user", "content": f"item {i}"}]}} for i in range(5)]'
    )
    submission = f'Submission(requests={requests}, model="claude-sonnet-5-5", max_tokens=16, state_path=STATE)'
    dag = write_dag(
        dags,
        "three_task_deadline",
        f"""
        from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator, SyncPolicy
        STATE = {str(tmp_path / "state")!r}
        # One request through the Messages API is assumed to take the whole 10 minutes to the deadline:
        # a resubmission batch could not make it, so the failed request goes to the Messages API.
        SLOW = SyncPolicy(request_latency=timedelta(minutes=10), landing_time=timedelta(0))

        submit = ClaudeBatchSubmitOperator(task_id="submit", requests={requests}, model="claude-sonnet-5-5",
                                           max_tokens=16, state_path=STATE)
        wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
        land = ClaudeBatchResultsOperator(task_id="land", batch_ids=submit.output, output_path={str(out)!r},
                                          max_retry_rounds=2, deferrable=True, poll_interval=0.2,
                                          resubmit={submission}, deadline=timedelta(minutes=10),
                                          sync_policy=SLOW)
        submit >> wait >> land
    """,
    )
    result = run_dag(dag)
    assert result.task_state("land") == "success"
    state = control.state()
    assert state["batches_created"] == 1 and not state["batches"][0]["canceled"]
    assert state["messages_answered"] == {"r2": 1}
    rows = _rows(out / "results.jsonl")
    assert {k: (r["result_type"], r["route"]) for k, r in rows.items()} == {
        **{f"r{i}": ("succeeded", "batch") for i in (0, 1, 3, 4)},
        "r2": ("succeeded", "sync"),
    }


def test_a_canary_beside_a_guarded_deadline_is_refused_when_the_task_is_defined() -> None:
    # The canary's wait is not the guard's: a canary batch still running at the switch time would hold
    # the rest (and the Messages API fallback) back past the deadline.
    from datetime import timedelta

    from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator

    common: dict[str, Any] = {"requests": [], "output_path": "/tmp/out", "canary_requests": 2}
    with pytest.raises(ValueError, match="canary_requests cannot be used with a deadline and sync_fallback"):
        ClaudeBatchOperator(task_id="guarded", deadline=timedelta(hours=1), **common)
    ClaudeBatchOperator(task_id="waits_only", deadline=timedelta(hours=1), sync_fallback=False, **common)
    ClaudeBatchOperator(task_id="all_sync", deadline=timedelta(hours=1), route="sync", **common)
