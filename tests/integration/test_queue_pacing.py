"""Issue 18, point 2: one input's batches created as queue room appears, in order, and a retry mid-way
re-attaches to the batches already created and goes on with the rest."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str, tmp_path: Path) -> Path:
    return airflow_db


def test_batches_are_created_as_room_appears_and_a_retry_mid_way_continues(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import die_after_create

    control.configure(processing_seconds=1.0)
    made = die_after_create(monkeypatch, 2, "worker killed right after the second create")
    requests = (
        "[{'custom_id': f'r{i}', 'params': {'messages': [{'role': 'user', 'content': f'item {i}'}]}} for i in range(8)]"
    )
    dag = write_dag(
        dags,
        "queue_paced",
        f"""
        submit = ClaudeBatchSubmitOperator(task_id="submit", requests={requests}, model="claude-sonnet-5-5",
            max_tokens=32, max_requests_per_batch=2, state_path={str(tmp_path)!r}, create_policy=FAST,
            queue=QueuePolicy(max_queued_requests=2, check_interval=0.1), retries=1, retry_delay=timedelta(0))
    """,
    )
    result = run_dag(dag)
    assert result.task_state("submit") == "success"
    assert next(ti.try_number for ti in result.run.get_task_instances() if ti.task_id == "submit") == 2
    state = control.state()
    batches = state["batches"]
    assert state["batches_created"] == 4  # the batch created before the kill was adopted, not paid again
    assert [b["custom_ids"] for b in batches] == [["r0", "r1"], ["r2", "r3"], ["r4", "r5"], ["r6", "r7"]]
    assert made[:2] == [b["id"] for b in batches[:2]]
    assert result.xcom("submit") == [b["id"] for b in batches]
    created = [datetime.fromisoformat(b["created_at"]) for b in batches]
    for earlier, later in itertools.pairwise(created):  # each waited for the one before to end
        assert later - earlier >= timedelta(seconds=1.0)
