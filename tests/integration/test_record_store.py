"""Where the submission record lives by default, through real Airflow (`dag.test()`) and the emulator.

With no `state_path`, the record goes to Airflow 3.3's task state store: these tests show what it
survives (a retry, a clear: `rerun_cleared`), what it does not (a deleted DAG run), that an explicit
`state_path` and a record on the old local default still work, and that without the store a
non-local executor is refused before any API call.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.submit.store import STORE_KEY
from tests.dag_runner import requires_task_state_store, rerun_cleared, run_dag, task_state_store_value, write_dag

DATE = pendulum.datetime(2026, 4, 1, tz="UTC")
HOME_RECORDS = Path(os.environ["AIRFLOW_HOME"]) / "claude_batch" / "submissions"


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _submit(n: int = 2, extra: str = "") -> str:
    requests = (
        f"[{{'custom_id': f'r{{i}}', 'params': {{'messages': [{{'role': 'user', 'content': f'item {{i}}'}}]}}}} "
        f"for i in range({n})]"
    )
    return (
        f'submit = ClaudeBatchSubmitOperator(task_id="submit", requests={requests}, model="claude-sonnet-5-5", '
        f"max_tokens=32, create_policy=FAST{extra})"
    )


def _try_number(result: object, task_id: str) -> int:
    return next(ti.try_number for ti in result.run.get_task_instances() if ti.task_id == task_id)  # type: ignore[attr-defined]


@requires_task_state_store
def test_a_retry_after_the_worker_died_reattaches_through_the_store(
    dags: Path, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import die_after_create

    made = die_after_create(monkeypatch, 1, "worker killed before the batch ID was recorded")
    dag = write_dag(dags, "store_retry", _submit(2, ", retries=1, retry_delay=timedelta(0)"))
    result = run_dag(dag)
    assert result.task_state("submit") == "success" and _try_number(result, "submit") == 2
    assert control.state()["batches_created"] == 1
    assert result.xcom("submit") == made
    record = task_state_store_value(result.run, "submit", STORE_KEY)
    assert [p["batch_id"] for p in record["parts"]] == made and '"custom_ids"' not in json.dumps(record)
    assert not (HOME_RECORDS / "store_retry").exists()  # nothing on the worker's disk


@requires_task_state_store
def test_a_cleared_run_reattaches_and_a_deleted_run_starts_afresh(dags: Path, control: EmulatorControl) -> None:
    dag = write_dag(dags, "store_clear", _submit(3))
    first = run_dag(dag, DATE)
    recorded = task_state_store_value(first.run, "submit", STORE_KEY)["record_id"]
    cleared = rerun_cleared(dag, DATE)
    assert cleared.task_state("submit") == "success"
    assert task_state_store_value(cleared.run, "submit", STORE_KEY)["record_id"] == recorded
    assert control.state()["batches_created"] == 1
    assert cleared.xcom("submit") == first.xcom("submit")
    # dag.test() for the same date deletes the run, and the store's rows with it (ON DELETE CASCADE)
    assert run_dag(dag, DATE).task_state("submit") == "success"
    assert control.state()["batches_created"] == 2
    assert not (HOME_RECORDS / "store_clear").exists()


@requires_task_state_store
def test_an_explicit_state_path_wins_over_the_store(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    dag = write_dag(dags, "store_explicit", _submit(2, f", state_path={str(tmp_path)!r}"))
    first = run_dag(dag, DATE)
    record = json.loads(
        (
            tmp_path
            / "store_explicit"
            / first.run.run_id.replace(":", "%3A").replace("+", "%2B")
            / "submit"
            / "submission.json"
        ).read_text()
    )
    assert record["parts"][0]["batch_id"] == first.xcom("submit")[0]
    assert task_state_store_value(first.run, "submit", STORE_KEY) is None
    run_dag(dag, DATE)  # the run is re-created, the file record stays: re-attached
    assert control.state()["batches_created"] == 1


@requires_task_state_store
def test_a_record_on_the_old_local_default_is_reattached_and_moved_to_the_store(
    dags: Path, control: EmulatorControl
) -> None:
    legacy = write_dag(dags, "store_legacy", _submit(2, f", state_path={'file://' + str(HOME_RECORDS)!r}"))
    first = run_dag(legacy, DATE)
    assert task_state_store_value(first.run, "submit", STORE_KEY) is None
    current = write_dag(dags, "store_legacy", _submit(2))
    again = rerun_cleared(current, DATE)
    assert again.task_state("submit") == "success"
    assert control.state()["batches_created"] == 1
    assert task_state_store_value(again.run, "submit", STORE_KEY)["parts"][0]["batch_id"] == first.xcom("submit")[0]


def test_without_a_usable_store_a_non_local_executor_is_refused_before_any_call(
    dags: Path, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__STATE_STORE__CLEAR_ON_SUCCESS", "True")  # the store would forget on success
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor,KubernetesExecutor")
    dag = write_dag(dags, "store_refused", _submit(2, ", retries=2, retry_delay=timedelta(0)"))
    result = run_dag(dag)
    assert result.task_state("submit") == "failed" and _try_number(result, "submit") == 1  # not retried
    out = capfd.readouterr().out
    assert "StateNotSharedError" in out and "[claude_batch] state_path" in out
    assert "CeleryExecutor,KubernetesExecutor" in out
    assert control.state()["calls"] == {}
    assert not (HOME_RECORDS / "store_refused").exists()


def test_without_the_store_a_local_executor_keeps_the_local_disk(
    claude_conn: str, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_claude_batch.exceptions import StateNotSharedError
    from airflow_provider_claude_batch.submit.path_store import PathRecordStore
    from airflow_provider_claude_batch.submit.store import open_record_store

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    store = open_record_store(state_path=None, storage_conn_id=None, context={}, settle_seconds=0)
    assert isinstance(store, PathRecordStore) and str(HOME_RECORDS) in store.location
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "airflow.providers.celery.executors.celery_executor.CeleryExecutor")
    with pytest.raises(StateNotSharedError, match="no task state store"):
        open_record_store(state_path=None, storage_conn_id=None, context={}, settle_seconds=0)
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCH__STATE_PATH", "s3://bucket/state")
    assert (
        open_record_store(state_path=None, storage_conn_id=None, context={}, settle_seconds=0).location
        == "s3://bucket/state"
    )


@requires_task_state_store
def test_a_corrupt_record_fails_with_its_location_without_retrying_or_creating(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from airflow._shared.state import TaskScope
    from airflow.state import get_state_backend

    dag = write_dag(dags, "store_corrupt", _submit(2, ", retries=2, retry_delay=timedelta(0)"))
    first = run_dag(dag, DATE)
    get_state_backend().set(
        TaskScope(dag_id=first.run.dag_id, run_id=first.run.run_id, task_id="submit"),
        STORE_KEY,
        json.dumps({"version": 1, "parts": "??"}),
    )
    capfd.readouterr()
    broken = rerun_cleared(dag, DATE)
    assert broken.task_state("submit") == "failed" and _try_number(broken, "submit") == 2  # this try only
    out = capfd.readouterr().out
    assert "SubmissionRecordError" in out and f"key '{STORE_KEY}'" in out and "pays for them again" in out
    assert control.state()["batches_created"] == 1

    on_disk = write_dag(dags, "store_corrupt_file", _submit(2, f", state_path={str(tmp_path)!r}"))
    (tmp_path / "store_corrupt_file").mkdir()
    assert run_dag(on_disk, DATE).task_state("submit") == "success"
    (record,) = (tmp_path / "store_corrupt_file").rglob("submission.json")
    record.write_text('{"version": 1, "fingerp')
    assert run_dag(on_disk, DATE).task_state("submit") == "failed"
    out = capfd.readouterr().out
    assert "SubmissionRecordError" in out and "submission.json is unreadable" in out
    assert control.state()["batches_created"] == 2


@requires_task_state_store
def test_follow_up_rounds_and_a_decorated_input_live_in_shared_places(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r1", "outcome": "errored", "error_type": "overloaded_error", "times": 1})
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "store_rounds",
        f"""
        from airflow.sdk import task

        @task.claude_batch(output_path={str(out)!r}, model="claude-sonnet-5-5", max_tokens=16, deferrable=True,
                           poll_interval=0.2, create_policy=FAST)
        def batch():
            return [{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": f"x {{i}}"}}]}}}}
                    for i in range(3)]

        batch()
    """,
    )
    first = run_dag(dag, DATE)
    assert first.task_state("batch") == "success"
    assert control.state()["batches_created"] == 2
    for key in (STORE_KEY, f"{STORE_KEY}.round-1"):
        assert task_state_store_value(first.run, "batch", key)["parts"][0]["batch_id"]
    (stored_input,) = (out / ".claude_batch").rglob("input.jsonl")
    assert len(stored_input.read_text().splitlines()) == 3
    assert rerun_cleared(dag, DATE).task_state("batch") == "success"
    assert control.state()["batches_created"] == 2
    assert not (HOME_RECORDS / "store_rounds").exists()


@requires_task_state_store
def test_a_try_that_failed_cleanly_gives_its_claim_back_so_the_retry_creates_at_once(
    dags: Path, control: EmulatorControl
) -> None:
    import time

    control.inject({"endpoint": "create", "status": 429, "count": 3})  # try 1 gives up after FAST's 3 attempts
    dag = write_dag(dags, "store_release", _submit(2, ", retries=1, retry_delay=timedelta(0)"))
    started = time.monotonic()
    result = run_dag(dag)
    assert result.task_state("submit") == "success" and _try_number(result, "submit") == 2
    assert time.monotonic() - started < 120  # not claim_stale_seconds (900 s)
    state = control.state()
    assert state["batches_created"] == 1 and state["calls"]["create"] == 4


@requires_task_state_store
def test_a_claim_left_by_a_dead_worker_is_taken_over_once_it_goes_stale(
    dags: Path, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

    real_create = ClaudeBatchHook.create_batch_streamed
    calls: list[int] = []

    def die_before_the_first_create(self, chunks, size):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise SystemExit("worker killed after recording the intent, before sending the create")
        return real_create(self, chunks, size)

    monkeypatch.setattr(ClaudeBatchHook, "create_batch_streamed", die_before_the_first_create)
    policy = (
        "CreatePolicy(attempts=3, reconcile_seconds=1, reconcile_poll_seconds=0.2, backoff_seconds=0.1, "
        "claim_settle_seconds=0.2, claim_stale_seconds=2, claim_poll_seconds=0.2)"
    )
    dag = write_dag(
        dags,
        "store_takeover",
        _submit(2, ", retries=1, retry_delay=timedelta(0)").replace("create_policy=FAST", f"create_policy={policy}"),
    )
    result = run_dag(dag)
    assert result.task_state("submit") == "success"
    assert control.state()["batches_created"] == 1
    assert "holds the claim" in caplog.text and "taking over its claim" in caplog.text
