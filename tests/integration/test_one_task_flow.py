"""The one-task flow with resubmission rounds, through `dag.test()` against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag
from tests.helpers import printed

HEADER = "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator\n"


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _one_task(tmp_path: Path, out: Path, n: int = 6, extra: str = "") -> str:
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


def _rows(path: Path) -> dict[str, dict[str, object]]:
    return {r["custom_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_retryable_failures_are_resubmitted_until_they_succeed_and_invalid_ones_are_left(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes(
        {"match": "r0", "outcome": "errored", "error_type": "overloaded_error", "times": 2},  # fails twice
        {"match": "r1", "outcome": "expired", "times": 1},
        {"match": "r2", "outcome": "errored", "error_type": "api_error", "times": 1},
        {"match": "r3", "outcome": "errored", "error_type": "invalid_request_error"},  # never resubmitted
        {"match": "r4", "outcome": "errored", "error_type": "rate_limit_error"},  # fails every round
    )
    out = tmp_path / "out"
    result = run_dag(write_dag(dags, "one_task_rounds", _one_task(tmp_path, out)))
    assert result.task_state("batch") == "success"
    batches = control.state()["batches"]
    assert [sorted(b["custom_ids"]) for b in batches] == [
        ["r0", "r1", "r2", "r3", "r4", "r5"],
        ["r0", "r1", "r2", "r4"],
        ["r0", "r4"],
    ]
    rows = _rows(out / "results.jsonl")
    assert sorted(rows) == [f"r{i}" for i in range(6)]  # exactly one row per input custom_id
    assert {k: (r["result_type"], r["attempts"], r["round"]) for k, r in rows.items()} == {
        "r0": ("succeeded", 3, 2),
        "r1": ("succeeded", 2, 1),
        "r2": ("succeeded", 2, 1),
        "r3": ("errored", 1, 0),
        "r4": ("errored", 3, 2),
        "r5": ("succeeded", 1, 0),
    }
    assert rows["r3"]["error_type"] == "invalid_request_error"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [(r["round"], r["requests"], len(r["batch_ids"])) for r in manifest["rounds"]] == [
        (0, 6, 1),
        (1, 4, 1),
        (2, 2, 1),
    ]
    assert manifest["counts"] == {"succeeded": 4, "errored": 2, "canceled": 0, "expired": 0}
    assert manifest["cost"]["batch_usd"] == pytest.approx(sum(r["cost"]["batch_usd"] for r in manifest["rounds"]))
    for number, batch in enumerate(batches):  # the raw JSONL of every round is kept
        assert (out / "rounds" / f"round-{number}" / "raw" / f"{batch['id']}.jsonl").exists()
    assert set(_rows(out / "failures.jsonl")) == {"r3", "r4"}
    assert result.xcom("batch")["rounds"][2]["requests"] == 2


def test_no_retry_rounds_when_disabled_or_nothing_failed(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r0", "outcome": "errored", "error_type": "overloaded_error"})
    run_dag(write_dag(dags, "no_rounds", _one_task(tmp_path, tmp_path / "a", extra=", max_retry_rounds=0")))
    assert control.state()["batches_created"] == 1
    assert _rows(tmp_path / "a" / "results.jsonl")["r0"]["result_type"] == "errored"


def test_a_retry_in_the_middle_of_round_two_reattaches_to_round_two(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import die_after_create

    control.configure(processing_seconds=0.3)
    control.set_outcomes({"match": "r0", "outcome": "errored", "error_type": "overloaded_error", "times": 2})
    die_after_create(monkeypatch, 3, "worker killed right after round 2's create")
    out = tmp_path / "out"
    result = run_dag(
        write_dag(dags, "rounds_retry", _one_task(tmp_path, out, extra=", retries=1, retry_delay=timedelta(0)"))
    )
    assert result.task_state("batch") == "success"
    state = control.state()
    assert state["batches_created"] == 3  # round 0, round 1, round 2: none paid twice
    assert state["calls"]["results"] == 3  # landed rounds were not downloaded again
    assert _rows(out / "results.jsonl")["r0"]["attempts"] == 3


def test_the_task_decorator_runs_the_one_task_flow_on_what_the_function_returns(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes({"match": "q1", "outcome": "errored", "error_type": "overloaded_error", "times": 1})
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "decorated",
        f"""
        from airflow.sdk import task

        @task.claude_batch(output_path={str(out)!r}, model="claude-haiku-5-5", max_tokens=16,
                           state_path={str(tmp_path / "state")!r}, deferrable=True, poll_interval=0.2,
                           create_policy=FAST)
        def questions(count):
            return [{{"custom_id": f"q{{i}}", "params": {{"messages": [{{"role": "user", "content": f"Q{{i}}?"}}]}}}}
                    for i in range(count)]

        @task.claude_batch(output_path={str(tmp_path / "rows_out")!r}, model="claude-haiku-5-5", max_tokens=16,
                           state_path={str(tmp_path / "state")!r}, custom_id_column="id",
                           params_template={{"messages": [{{"role": "user", "content": "Label: {{text}}"}}]}})
        def rows():
            return [{{"id": "a", "text": "good"}}, {{"id": "b", "text": "bad"}}]

        questions(3)
        rows()
    """,
    )
    result = run_dag(dag)
    assert result.task_state("questions") == "success"
    assert result.task_state("rows") == "success"
    rows = _rows(out / "results.jsonl")
    assert {k: (r["result_type"], r["attempts"]) for k, r in rows.items()} == {
        "q0": ("succeeded", 1),
        "q1": ("succeeded", 2),
        "q2": ("succeeded", 1),
    }
    assert sorted(_rows(tmp_path / "rows_out" / "results.jsonl")) == ["a", "b"]


def test_a_decorated_function_returning_the_wrong_thing_fails_before_any_call(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = write_dag(
        dags,
        "decorated_bad",
        f"""
        from airflow.sdk import task

        @task.claude_batch(output_path={str(tmp_path / "out")!r}, state_path={str(tmp_path / "state")!r})
        def oops():
            return "not a list"

        oops()
    """,
    )
    assert run_dag(dag).task_state("oops") == "failed"
    assert "return a list of requests, not str" in printed(capfd)
    assert control.state()["calls"] == {}


def test_the_results_operator_resubmits_in_the_three_task_flow(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes(
        {"match": "r2", "outcome": "errored", "error_type": "overloaded_error", "times": 1},
        {"match": "r4", "outcome": "errored", "error_type": "invalid_request_error"},
    )
    out = tmp_path / "out"
    requests = (
        '[{"custom_id": f"r{i}", "params": {"messages": [{"role": "user", "content": f"item {i}"}]}} for i in range(5)]'
    )
    dag = write_dag(
        dags,
        "three_task_rounds",
        f"""
        from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator

        submit = ClaudeBatchSubmitOperator(task_id="submit", requests={requests}, model="claude-sonnet-5-5",
                                           max_tokens=16, state_path={str(tmp_path / "state")!r})
        wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
        land = ClaudeBatchResultsOperator(task_id="land", batch_ids=submit.output, output_path={str(out)!r},
                                          max_retry_rounds=2, deferrable=True, poll_interval=0.2,
                                          resubmit=Submission(requests={requests}, model="claude-sonnet-5-5",
                                                              max_tokens=16, state_path={str(tmp_path / "state")!r}))
        submit >> wait >> land
    """,
    )
    result = run_dag(dag)
    assert result.task_state("land") == "success"
    assert [b["custom_ids"] for b in control.state()["batches"]] == [[f"r{i}" for i in range(5)], ["r2"]]
    rows = _rows(out / "results.jsonl")
    assert {k: (r["result_type"], r["attempts"]) for k, r in rows.items()} == {
        "r0": ("succeeded", 1),
        "r1": ("succeeded", 1),
        "r2": ("succeeded", 2),
        "r3": ("succeeded", 1),
        "r4": ("errored", 1),
    }
    # Round 0's batches came from the submit task: its record and the same input check them exactly.
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [b["results_checked_against"] for b in manifest["batches"]] == ["input", "input"]


def test_a_decorated_function_returning_the_same_requests_in_another_order_is_not_paid_twice(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    """A retry or clear calls the function again; a set or an unordered query gives the same requests in
    another order (a set of strings is ordered by hash, which differs from process to process). That is
    the same work: the stored input is kept, so the fingerprint matches and no second batch is created."""
    import pendulum

    from tests.dag_runner import rerun_cleared
    from tests.helpers import AIRFLOW_VERSION

    # The record is under state_path here, so on Airflow < 3.3 (no clear that keeps the run in
    # dag.test) re-running the same date is the same clear-and-re-run.
    rerun = rerun_cleared if AIRFLOW_VERSION >= (3, 3) else run_dag
    date = pendulum.datetime(2026, 4, 2, tz="UTC")
    control.configure(processing_seconds=0.2)
    marker = tmp_path / "second-call"
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "decorated_reordered",
        f"""
        import os
        from airflow.sdk import task

        @task.claude_batch(output_path={str(out)!r}, model="claude-haiku-5-5", max_tokens=16,
                           state_path={str(tmp_path / "state")!r}, create_policy=FAST)
        def questions():
            order = range(4) if not os.path.exists({str(marker)!r}) else reversed(range(4))
            open({str(marker)!r}, "a").close()
            return [{{"custom_id": f"q{{i}}", "params": {{"messages": [{{"role": "user", "content": f"Q{{i}}?"}}]}}}}
                    for i in order]

        questions()
    """,
    )
    assert run_dag(dag, date).task_state("questions") == "success"
    assert control.state()["batches_created"] == 1
    assert rerun(dag, date).task_state("questions") == "success"
    assert marker.exists() and control.state()["batches_created"] == 1
    assert sorted(_rows(out / "results.jsonl")) == ["q0", "q1", "q2", "q3"]
