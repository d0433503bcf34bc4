"""Submit and wait through real Airflow (`dag.test()`) against the emulator over loopback."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag

DATE = pendulum.datetime(2026, 3, 1, tz="UTC")


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str, tmp_path: Path) -> Path:
    return airflow_db


def _requests(n: int, prefix: str = "r") -> str:
    return (
        f"[{{'custom_id': f'{prefix}{{i}}', 'params': {{'messages': [{{'role': 'user', 'content': f'item {{i}}'}}]}}}} "
        f"for i in range({n})]"
    )


def test_three_task_flow_splits_and_waits(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=0.5)
    dag = write_dag(
        dags,
        "split_and_wait",
        f"""
        submit = ClaudeBatchSubmitOperator(task_id="submit", requests={_requests(5)}, model="claude-sonnet-5-5",
                                           max_tokens=32, max_requests_per_batch=2, state_path={str(tmp_path)!r},
                                           create_policy=FAST)
        wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
    """,
    )
    result = run_dag(dag)
    assert result.state == "success"
    state = control.state()
    assert [b["custom_ids"] for b in state["batches"]] == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    ids = [b["id"] for b in state["batches"]]
    assert result.xcom("submit") == ids
    assert result.xcom("submit", "batch_id") == ids[0]


def _submit(requests: str, tmp_path: Path, extra: str = "") -> str:
    return (
        f'submit = ClaudeBatchSubmitOperator(task_id="submit", requests={requests}, model="claude-sonnet-5-5", '
        f"max_tokens=32, state_path={str(tmp_path)!r}, create_policy=FAST{extra})"
    )


# ---- 1. validation before spend -------------------------------------------------------------------
def test_bad_requests_fail_before_any_api_call(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = (
        '[{"custom_id": "ok-1", "params": {"messages": [{"role": "user", "content": "x"}]}}, '
        '{"custom_id": "has space", "params": {"messages": [{"role": "user", "content": "x"}]}}, '
        '{"custom_id": "ok-1", "params": {"messages": [{"role": "user", "content": "x"}]}}, '
        '{"custom_id": "empty", "params": {"messages": []}}, '
        '{"custom_id": "no-params"}, "not a dict"]'
    )
    dag = write_dag(dags, "bad_input", _submit(bad, tmp_path, ", retries=2"))
    result = run_dag(dag)
    assert result.task_state("submit") == "failed"
    out = capfd.readouterr().out
    assert "5 of 6 requests are invalid; nothing was submitted" in out
    assert "line 2 (custom_id 'has space')" in out
    assert "line 3 (custom_id 'ok-1'): duplicate custom_id (first seen on line 1)" in out
    assert "line 4 (custom_id 'empty'): params.messages is empty" in out
    assert "line 6 (no custom_id)" in out
    assert control.state()["calls"] == {}


def test_a_bad_jsonl_file_names_its_line_numbers(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}}\n'
        "\n"
        "{not json\n"
        '{"custom_id": "b", "params": {"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}}\n'
    )
    dag = write_dag(
        dags,
        "bad_jsonl",
        f"""
        submit = ClaudeBatchSubmitOperator(task_id="submit", requests_path={str(path)!r}, state_path={str(tmp_path)!r})
    """,
    )
    assert run_dag(dag).task_state("submit") == "failed"
    out = capfd.readouterr().out
    assert "3 of 3 requests are invalid" in out
    assert "line 1 (custom_id 'a'): params.model is missing" in out
    assert "line 3 (no custom_id): not valid JSON" in out
    assert "line 4 (custom_id 'b'): params.max_tokens is missing" in out
    assert control.state()["calls"] == {}


def test_rows_with_a_template_from_csv(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,text\nt1,great product\nt2,awful service\n")
    dag = write_dag(
        dags,
        "rows_csv",
        f"""
        submit = ClaudeBatchSubmitOperator(
            task_id="submit", rows_path={str(path)!r}, custom_id_column="id", model="claude-haiku-5-5", max_tokens=8,
            params_template={{"system": "Classify sentiment.", "messages": [{{"role": "user", "content": "Text: {{text}}"}}]}},
            state_path={str(tmp_path)!r})
    """,
    )
    assert run_dag(dag).state == "success"
    assert control.state()["batches"][0]["custom_ids"] == ["t1", "t2"]


# ---- 3. never pay twice ---------------------------------------------------------------------------
def test_a_rerun_of_the_same_run_reattaches_and_changed_input_submits_anew(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    dag = write_dag(dags, "rerun", _submit(_requests(3), tmp_path))
    first = run_dag(dag, DATE)
    second = run_dag(dag, DATE)
    assert first.run.run_id == second.run.run_id
    assert control.state()["batches_created"] == 1
    assert second.xcom("submit") == first.xcom("submit")
    changed = write_dag(dags, "rerun", _submit(_requests(4), tmp_path))
    run_dag(changed, DATE)
    assert control.state()["batches_created"] == 2
    forced = write_dag(dags, "rerun", _submit(_requests(4), tmp_path, ", force_resubmit=True"))
    run_dag(forced, DATE)
    assert control.state()["batches_created"] == 3


def test_a_retry_after_the_worker_died_post_create_adopts_the_batch(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import die_after_create

    made = die_after_create(monkeypatch, 1, "worker killed before the batch ID was recorded")
    dag = write_dag(dags, "retry_adopts", _submit(_requests(2), tmp_path, ", retries=1, retry_delay=timedelta(0)"))
    result = run_dag(dag)
    assert result.task_state("submit") == "success"
    assert control.state()["batches_created"] == 1
    assert result.xcom("submit") == made


@pytest.mark.parametrize("mode", ["reset", "timeout"])
def test_a_lost_create_answer_is_adopted_not_paid_twice(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT", monkeypatch_conn_timeout(control, 1))
    control.inject({"endpoint": "create", "kind": "lost_response", "mode": mode, "delay_seconds": 3})
    dag = write_dag(dags, f"lost_create_{mode}", _submit(_requests(3), tmp_path))
    result = run_dag(dag)
    assert result.task_state("submit") == "success"
    state = control.state()
    assert state["batches_created"] == 1
    assert state["calls"]["create"] == 1
    assert result.xcom("submit") == [state["batches"][0]["id"]]


def test_transient_create_errors_are_retried_without_duplicates(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.inject({"endpoint": "create", "status": 529}, {"endpoint": "create", "status": 429, "retry_after": 0.1})
    dag = write_dag(dags, "create_retries", _submit(_requests(2), tmp_path))
    assert run_dag(dag).task_state("submit") == "success"
    state = control.state()
    assert state["calls"]["create"] == 3
    assert state["batches_created"] == 1


def monkeypatch_conn_timeout(control: EmulatorControl, seconds: float) -> str:
    import json

    return json.dumps(
        {
            "conn_type": "claude_batch",
            "host": control.base_url,
            "password": "emulator-key",
            "extra": {"timeout": seconds, "max_retries": 2},
        }
    )


# ---- 4-6. waiting, outages, cancellation ------------------------------------------------------------
def _sensor(extra: str = "") -> str:
    return f'wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, poke_interval=0.2{extra})'


def test_wait_for_completion_in_the_same_task_deferred_and_in_worker(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.5)
    for deferrable in (True, False):
        dag = write_dag(
            dags,
            f"one_task_wait_{deferrable}",
            _submit(_requests(2), tmp_path, f", wait_for_completion=True, deferrable={deferrable}, poll_interval=0.2"),
        )
        result = run_dag(dag)
        assert result.task_state("submit") == "success"
        assert result.xcom("submit") == [control.state()["batches"][-1]["id"]]


def test_an_outage_while_waiting_is_ridden_out_and_cancels_nothing(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=1.0)
    control.inject(
        {"endpoint": "retrieve", "status": 529, "count": 3},
        {"endpoint": "retrieve", "status": 429, "retry_after": 0.2, "count": 2},
        {"endpoint": "retrieve", "status": 500, "count": 2},
    )
    dag = write_dag(dags, "outage", _submit(_requests(2), tmp_path) + "\n" + _sensor(", deferrable=True"))
    result = run_dag(dag)
    assert result.task_state("wait") == "success"
    state = control.state()
    assert state["faults_served"]["retrieve"] == 7
    assert "cancel" not in state["calls"]
    assert state["batches_created"] == 1


def test_an_outage_longer_than_the_budget_fails_without_cancelling(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    control.configure(processing_seconds=3600)
    control.inject({"endpoint": "retrieve", "status": 503, "retry_after": 0.2, "for_seconds": 600})
    dag = write_dag(
        dags,
        "long_outage",
        _submit(_requests(2), tmp_path)
        + "\n"
        + _sensor(", deferrable=True, wait_policy=WaitPolicy(error_budget=1.0), cancel_on_kill=True"),
    )
    result = run_dag(dag)
    assert result.task_state("wait") == "failed"
    assert "kept failing" in capfd.readouterr().out
    state = control.state()
    assert "cancel" not in state["calls"]
    assert state["batches"][0]["processing_status"] == "in_progress"


def test_auth_and_not_found_errors_fail_fast(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = write_dag(
        dags,
        "unknown_batch",
        """
        wait = ClaudeBatchSensor(task_id="wait", batch_ids="msgbatch_does_not_exist", deferrable=True,
                                 poke_interval=0.2, retries=3, retry_delay=timedelta(0))
    """,
    )
    result = run_dag(dag)
    assert result.task_state("wait") == "failed"
    assert "404 not_found_error" in capfd.readouterr().out
    assert control.state()["calls"]["retrieve"] == 1


def test_the_deadline_cancels_only_with_cancel_on_kill(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=3600)
    for cancel in (False, True):
        dag = write_dag(
            dags,
            f"deadline_{cancel}",
            _submit(
                _requests(1, f"c{int(cancel)}-"),
                tmp_path,
                (
                    f", wait_for_completion=True, deferrable=True, poll_interval=0.2, wait_policy=WaitPolicy(timeout=timedelta(seconds=1)), "
                    f"cancel_on_kill={cancel}"
                ),
            ),
        )
        assert run_dag(dag).task_state("submit") == "failed"
    batches = control.state()["batches"]
    assert [b["canceled"] for b in batches] == [False, True]


def test_a_batch_canceled_outside_airflow_fails_the_sensor_or_skips_it(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import anthropic

    control.configure(processing_seconds=3600)
    with anthropic.Anthropic(base_url=control.base_url, api_key="emulator-key") as sdk:
        batch = sdk.messages.batches.create(
            requests=[  # type: ignore[list-item]
                {
                    "custom_id": "x",
                    "params": {
                        "model": "claude-sonnet-5-5",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                }
            ]
        )
        sdk.messages.batches.cancel(batch.id)
    for mode in ("deferrable=True", "mode='poke'", "mode='reschedule'"):
        dag = write_dag(
            dags,
            f"canceled_{mode.split('=')[0]}",
            f"""
            hard = ClaudeBatchSensor(task_id="hard", batch_ids={batch.id!r}, poke_interval=0.2, {mode})
            soft = ClaudeBatchSensor(task_id="soft", batch_ids=[{batch.id!r}], poke_interval=0.2, soft_fail=True, {mode})
        """,
        )
        result = run_dag(dag)
        assert result.task_state("hard") == "failed", mode
        assert result.task_state("soft") == "skipped", mode
    assert "Canceled before it finished" in capfd.readouterr().out


def test_sensor_timeout_fails_or_skips_with_soft_fail(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=3600)
    import anthropic

    with anthropic.Anthropic(base_url=control.base_url, api_key="emulator-key") as sdk:
        batch = sdk.messages.batches.create(
            requests=[  # type: ignore[list-item]
                {
                    "custom_id": "x",
                    "params": {
                        "model": "claude-sonnet-5-5",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                }
            ]
        )
    for mode in ("deferrable=True", "mode='poke'"):
        dag = write_dag(
            dags,
            f"timeout_{mode.split('=')[0]}",
            f"""
            hard = ClaudeBatchSensor(task_id="hard", batch_ids={batch.id!r}, poke_interval=0.2, timeout=1, {mode})
            soft = ClaudeBatchSensor(task_id="soft", batch_ids={batch.id!r}, poke_interval=0.2, timeout=1,
                                     soft_fail=True, {mode})
        """,
        )
        result = run_dag(dag)
        assert result.task_state("hard") == "failed", mode
        assert result.task_state("soft") == "skipped", mode
    assert control.state()["batches"][0]["cancel_calls"] == 0


# ---- 8. queue guard -------------------------------------------------------------------------------------
def test_the_queue_guard_waits_for_room_instead_of_being_refused(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    import anthropic

    control.configure(processing_seconds=1.5)
    with anthropic.Anthropic(base_url=control.base_url, api_key="emulator-key") as sdk:
        sdk.messages.batches.create(
            requests=[  # type: ignore[misc]
                {
                    "custom_id": f"q{i}",
                    "params": {
                        "model": "claude-sonnet-5-5",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "x"}],
                    },
                }
                for i in range(4)
            ]
        )
    dag = write_dag(
        dags,
        "queue_guard",
        _submit(_requests(3), tmp_path, ", queue=QueuePolicy(max_queued_requests=5, check_interval=0.2)"),
    )
    result = run_dag(dag)
    assert result.task_state("submit") == "success"
    first, second = control.state()["batches"]
    assert pendulum.parse(second["created_at"]) >= pendulum.parse(first["created_at"]).add(seconds=1.5)


def test_a_batch_larger_than_the_queue_cap_is_refused_up_front(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    dag = write_dag(
        dags, "queue_too_small", _submit(_requests(3), tmp_path, ", queue=QueuePolicy(max_queued_requests=2)")
    )
    assert run_dag(dag).task_state("submit") == "failed"
    assert control.state()["calls"] == {}


# ---- 9. console links -----------------------------------------------------------------------------------
def test_each_batch_gets_a_console_link(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    dag = write_dag(dags, "links", _submit(_requests(3), tmp_path, ", max_requests_per_batch=1"))
    result = run_dag(dag)
    ids = result.xcom("submit")
    assert len(ids) == 3
    for index, batch_id in enumerate(ids):
        assert result.xcom("submit", f"_link_claude_console_batch_{index}").endswith(f"/batches/{batch_id}")
    assert result.xcom("submit", "_link_claude_console_batch_3") == ""


# ---- input forms ------------------------------------------------------------------------------------
def test_requests_from_an_upstream_task_a_jsonl_file_and_rows_with_a_callable(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "".join(
            '{"custom_id": "f'
            + str(i)
            + '", "params": {"messages": [{"role": "user", "content": "{{ not jinja }}"}]}}\n'
            for i in range(3)
        )
    )
    dag = write_dag(
        dags,
        "input_forms",
        f"""
        from airflow.sdk import task

        @task
        def make_requests():
            return [{{"custom_id": f"x{{i}}", "params": {{"messages": [{{"role": "user", "content": "hi"}}]}}}}
                    for i in range(2)]

        def to_params(row):
            return {{"messages": [{{"role": "user", "content": row["question"].upper()}}]}}

        from_xcom = ClaudeBatchSubmitOperator(task_id="from_xcom", requests=make_requests(), model="claude-sonnet-5-5",
                                              max_tokens=8, state_path={str(tmp_path)!r})
        from_file = ClaudeBatchSubmitOperator(task_id="from_file", requests_path="file://{path}",
                                              model="claude-sonnet-5-5", max_tokens=8, state_path={str(tmp_path)!r})
        from_rows = ClaudeBatchSubmitOperator(task_id="from_rows", rows=[{{"key": "k1", "question": "why?"}}],
                                              custom_id_column="key", build_params=to_params,
                                              model="claude-sonnet-5-5", max_tokens=8, state_path={str(tmp_path)!r})
    """,
    )
    result = run_dag(dag)
    assert result.state == "success"
    ids = sorted(tuple(b["custom_ids"]) for b in control.state()["batches"])
    assert ids == [("f0", "f1", "f2"), ("k1",), ("x0", "x1")]


def test_worker_side_on_kill_cancels_only_a_task_marked_failed(
    claude_conn: str, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchSubmitOperator

    control.configure(processing_seconds=3600)

    class FakeTI:
        dag_id, task_id, run_id, map_index = "d", "submit", "r", -1

    for state, cancel_on_kill, expect_cancel in (
        ("running", True, False),
        ("success", True, False),
        ("failed", False, False),
        ("failed", True, True),
    ):
        batch_id = ClaudeBatchHook().create_batch(make_requests_literal()).id
        monkeypatch.setattr(
            RuntimeTaskInstance, "get_task_states", staticmethod(lambda state=state, **kwargs: {"r": {"submit": state}})
        )
        operator = ClaudeBatchSubmitOperator(task_id="submit", requests=[], cancel_on_kill=cancel_on_kill)
        operator._batch_ids = [batch_id]
        operator._context = {"ti": FakeTI()}  # type: ignore[typeddict-item]
        operator.on_kill()
        canceled = {b["id"]: b["canceled"] for b in control.state()["batches"]}
        assert canceled[batch_id] is expect_cancel, (state, cancel_on_kill)


def make_requests_literal() -> list[dict[str, object]]:
    return [
        {
            "custom_id": "k",
            "params": {"model": "claude-sonnet-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        }
    ]
