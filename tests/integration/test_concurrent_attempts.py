"""Two live attempts of one task instance (a zombie try and its retry) submitting at the same moment:
exactly one creates each batch, the other uses it. Against the emulator, on each record store:
local disk (O_EXCL), S3 (moto: write, settle, read back) and the task state store as the API server
writes it (Airflow's MetastoreBackend: an upsert with no compare-and-set)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.plan import plan_batches
from airflow_provider_claude_batch.storage import as_path
from airflow_provider_claude_batch.submit.create import Submitter
from airflow_provider_claude_batch.submit.path_store import PathRecordStore
from airflow_provider_claude_batch.submit.policy import CreatePolicy
from airflow_provider_claude_batch.submit.record import TaskKey
from airflow_provider_claude_batch.submit.store import RecordStore, TaskStateRecordStore
from tests.dag_runner import requires_task_state_store, run_dag, write_dag
from tests.helpers import make_requests

POLICY = CreatePolicy(
    reconcile_seconds=1,
    reconcile_poll_seconds=0.1,
    backoff_seconds=0.05,
    claim_settle_seconds=0.5,
    claim_stale_seconds=60,
    claim_poll_seconds=0.05,
)


class MetastoreAccessor:
    """`context["task_state_store"]` without the supervisor: the same calls on the backend the API server uses."""

    def __init__(self, dag_id: str, run_id: str, task_id: str) -> None:
        from airflow._shared.state import TaskScope

        self.scope = TaskScope(dag_id=dag_id, run_id=run_id, task_id=task_id)

    def get(self, key: str, default: Any = None) -> Any:
        from airflow.state import get_state_backend

        raw = get_state_backend().get(self.scope, key)
        return json.loads(raw) if raw is not None else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        from airflow.state import get_state_backend

        get_state_backend().set(self.scope, key, json.dumps(value), expires_at=None)

    def delete(self, key: str) -> None:
        from airflow.state import get_state_backend

        get_state_backend().delete(self.scope, key)


def _race(store: RecordStore, key: TaskKey) -> list[list[str]]:
    prepared, _, _ = prepare_requests(list(enumerate(make_requests(4), 1)))
    plans = plan_batches(prepared, max_requests=2)
    start = threading.Barrier(2)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def attempt(number: int) -> None:
        try:
            submitter = Submitter(ClaudeBatchHook(), store, POLICY)
            start.wait()
            record = submitter.open_record(key, prepared, plans, force_resubmit=False, attempt_id=f"try-{number}")
            for part in record.parts:
                record = submitter.submit_part(record, record.parts[part.index], prepared, plans[part.index])
            results[number] = record.batch_ids
        except BaseException as exc:  # surfaced below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return [results[1], results[2]]


def _assert_one_create_per_batch(
    control: EmulatorControl, outcome: list[list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    state = control.state()
    assert state["batches_created"] == 2 and state["calls"]["create"] == 2
    assert outcome[0] == outcome[1] == [b["id"] for b in state["batches"]]
    assert "holds the claim" in caplog.text  # the second attempt waited on the first one's claim


def test_two_attempts_on_local_disk_create_once(
    claude_conn: str, control: EmulatorControl, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    outcome = _race(PathRecordStore(as_path(str(tmp_path)), settle_seconds=0.5), TaskKey("d", "t", "r"))
    _assert_one_create_per_batch(control, outcome, caplog)


def test_two_attempts_on_s3_create_once(
    claude_conn: str, control: EmulatorControl, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = PathRecordStore(as_path(f"s3://{s3_bucket}/state", "aws_default"), settle_seconds=0.5)
    _assert_one_create_per_batch(control, _race(store, TaskKey("d", "t", "r")), caplog)


@requires_task_state_store
def test_two_attempts_on_the_task_state_store_create_once(
    airflow_db: Path, claude_conn: str, control: EmulatorControl, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_dag(
        write_dag(
            airflow_db, "concurrent_store", "from airflow.sdk import task\n@task\ndef submit():\n    return 1\nsubmit()"
        )
    ).run
    caplog.set_level(logging.INFO)
    store = TaskStateRecordStore(MetastoreAccessor(run.dag_id, run.run_id, "submit"), settle_seconds=0.5)
    outcome = _race(store, TaskKey(run.dag_id, "submit", run.run_id))
    _assert_one_create_per_batch(control, outcome, caplog)
