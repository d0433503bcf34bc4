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
    return (f"[{{'custom_id': f'{prefix}{{i}}', 'params': {{'messages': [{{'role': 'user', 'content': f'item {{i}}'}}]}}}} "
            f"for i in range({n})]")


def test_three_task_flow_splits_and_waits(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=0.5)
    dag = write_dag(dags, "split_and_wait", f"""
        submit = ClaudeBatchSubmitOperator(task_id="submit", requests={_requests(5)}, model="claude-sonnet-5-5",
                                           max_tokens=32, max_requests_per_batch=2, state_path={str(tmp_path)!r},
                                           create_policy=FAST)
        wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
    """)
    result = run_dag(dag)
    assert result.state == "success"
    state = control.state()
    assert [b["custom_ids"] for b in state["batches"]] == [["r0", "r1"], ["r2", "r3"], ["r4"]]
    ids = [b["id"] for b in state["batches"]]
    assert result.xcom("submit") == ids
    assert result.xcom("submit", "batch_id") == ids[0]


def _submit(requests: str, tmp_path: Path, extra: str = "") -> str:
    return (f'submit = ClaudeBatchSubmitOperator(task_id="submit", requests={requests}, model="claude-sonnet-5-5", '
            f'max_tokens=32, state_path={str(tmp_path)!r}, create_policy=FAST{extra})')


# ---- 1. validation before spend -------------------------------------------------------------------
def test_bad_requests_fail_before_any_api_call(dags: Path, control: EmulatorControl, tmp_path: Path,
                                              capfd: pytest.CaptureFixture[str]) -> None:
    bad = ('[{"custom_id": "ok-1", "params": {"messages": [{"role": "user", "content": "x"}]}}, '
           '{"custom_id": "has space", "params": {"messages": [{"role": "user", "content": "x"}]}}, '
           '{"custom_id": "ok-1", "params": {"messages": [{"role": "user", "content": "x"}]}}, '
           '{"custom_id": "empty", "params": {"messages": []}}, '
           '{"custom_id": "no-params"}, "not a dict"]')
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


def test_a_bad_jsonl_file_names_its_line_numbers(dags: Path, control: EmulatorControl, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}}\n'
                    "\n"
                    "{not json\n"
                    '{"custom_id": "b", "params": {"model": "claude-x", "messages": [{"role": "user", "content": "x"}]}}\n')
    dag = write_dag(dags, "bad_jsonl", f"""
        submit = ClaudeBatchSubmitOperator(task_id="submit", requests_path={str(path)!r}, state_path={str(tmp_path)!r})
    """)
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
    dag = write_dag(dags, "rows_csv", f"""
        submit = ClaudeBatchSubmitOperator(
            task_id="submit", rows_path={str(path)!r}, custom_id_column="id", model="claude-haiku-5-5", max_tokens=8,
            params_template={{"system": "Classify sentiment.", "messages": [{{"role": "user", "content": "Text: {{text}}"}}]}},
            state_path={str(tmp_path)!r})
    """)
    assert run_dag(dag).state == "success"
    assert control.state()["batches"][0]["custom_ids"] == ["t1", "t2"]


# ---- 3. never pay twice ---------------------------------------------------------------------------
def test_a_rerun_of_the_same_run_reattaches_and_changed_input_submits_anew(
        dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
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
        dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

    real_create = ClaudeBatchHook.create_batch_streamed
    made: list[str] = []

    def dies_after_create(self, chunks, size):  # type: ignore[no-untyped-def]
        batch = real_create(self, chunks, size)
        made.append(batch.id)
        if len(made) == 1:
            raise SystemExit("worker killed before the batch ID was recorded")
        return batch

    monkeypatch.setattr(ClaudeBatchHook, "create_batch_streamed", dies_after_create)
    dag = write_dag(dags, "retry_adopts", _submit(_requests(2), tmp_path, ", retries=1, retry_delay=timedelta(0)"))
    result = run_dag(dag)
    assert result.task_state("submit") == "success"
    assert control.state()["batches_created"] == 1
    assert result.xcom("submit") == made


@pytest.mark.parametrize("mode", ["reset", "timeout"])
def test_a_lost_create_answer_is_adopted_not_paid_twice(dags: Path, control: EmulatorControl, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT", monkeypatch_conn_timeout(control, 1))
    control.inject({"endpoint": "create", "kind": "lost_response", "mode": mode, "delay_seconds": 3})
    dag = write_dag(dags, f"lost_create_{mode}", _submit(_requests(3), tmp_path))
    result = run_dag(dag)
    assert result.task_state("submit") == "success"
    state = control.state()
    assert state["batches_created"] == 1
    assert state["calls"]["create"] == 1
    assert result.xcom("submit") == [state["batches"][0]["id"]]


def test_transient_create_errors_are_retried_without_duplicates(dags: Path, control: EmulatorControl,
                                                                tmp_path: Path) -> None:
    control.inject({"endpoint": "create", "status": 529}, {"endpoint": "create", "status": 429, "retry_after": 0.1})
    dag = write_dag(dags, "create_retries", _submit(_requests(2), tmp_path))
    assert run_dag(dag).task_state("submit") == "success"
    state = control.state()
    assert state["calls"]["create"] == 3
    assert state["batches_created"] == 1


def monkeypatch_conn_timeout(control: EmulatorControl, seconds: float) -> str:
    import json

    return json.dumps({"conn_type": "claude_batch", "host": control.base_url, "password": "emulator-key",
                       "extra": {"timeout": seconds, "max_retries": 2}})
