"""Run a DAG written as source through `dag.test()`: the file lands in the dags folder, as Airflow 3
needs for `dag.test()` to serialize it, and the returned run tells each task's state."""

from __future__ import annotations

import importlib.util
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import AIRFLOW_VERSION

HEADER = """
import pendulum
from datetime import timedelta
from airflow.sdk import DAG
from airflow_provider_claude_batch.operators.claude_batch import (
    ClaudeBatchSubmitOperator, LandingPolicy, QueuePolicy, Submission, WaitPolicy,
)
from airflow_provider_claude_batch.sensors.claude_batch import ClaudeBatchSensor
from airflow_provider_claude_batch.submit.policy import CreatePolicy
FAST = CreatePolicy(attempts=3, reconcile_seconds=2, reconcile_poll_seconds=0.2, backoff_seconds=0.1,
                    claim_settle_seconds=0.2, claim_poll_seconds=0.1)
"""


@dataclass
class RunResult:
    run: Any

    @property
    def state(self) -> str:
        return str(self.run.state)

    def task_state(self, task_id: str) -> str | None:
        for ti in self.run.get_task_instances():
            if ti.task_id == task_id:
                return str(ti.state) if ti.state is not None else None
        raise KeyError(task_id)

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.scalars(
                XComModel.get_many(run_id=self.run.run_id, dag_ids=self.run.dag_id, task_ids=task_id, key=key)
            ).first()
            return XComModel.deserialize_value(row) if row is not None else None


def write_dag(dags_folder: Path, dag_id: str, body: str) -> Any:
    source = (
        HEADER + f"\nwith DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz='UTC'), "
        f"catchup=False) as dag:\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
    )
    path = dags_folder / f"{dag_id}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"test_dag_{dag_id}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def register_like_the_dag_processor(dag: Any) -> None:
    """Airflow 3.0's `dag.test()` runs a DAG it never wrote to the metadata DB, so the DAG's assets stay
    inactive and a task with an Asset outlet is refused (AirflowInactiveAssetInInletOrOutletException);
    3.1+ registers the DAG first. On 3.0, write it as 3.0's DAG processor would, assets activated."""
    if AIRFLOW_VERSION >= (3, 1):
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dagbag import DagBag

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=dag.fileloc, include_examples=False)
    assert dag.dag_id in bag.dags, bag.import_errors
    bag.sync_to_db("dags-folder", None)


def run_dag(dag: Any, logical_date: datetime | None = None) -> RunResult:
    """One run. The same `logical_date` again re-runs the same run_id, but `dag.test()` deletes and
    re-creates the DAG run, which also deletes its task state store rows: use `rerun_cleared` for a clear."""
    register_like_the_dag_processor(dag)
    if logical_date is None:
        return RunResult(dag.test())
    return RunResult(dag.test(logical_date=logical_date, run_after=logical_date))


def rerun_cleared(dag: Any, logical_date: datetime) -> RunResult:
    """Clear the run of `logical_date` and run it again, keeping the DAG run (as the UI's Clear and a
    reprocessing backfill do). `dag.test()` clears the task instances with Airflow's own clear; only
    its replacement of the run is skipped."""
    from unittest import mock

    import airflow.models.dagrun as dagrun_module
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    replace_run = dagrun_module.get_or_create_dagrun

    def keep_run(**kwargs: Any) -> Any:
        session = kwargs["session"]
        run = session.scalar(
            select(dagrun_module.DagRun).where(
                dagrun_module.DagRun.dag_id == kwargs["dag"].dag_id,
                dagrun_module.DagRun.logical_date == kwargs["logical_date"],
            )
        )
        if run is None:
            return replace_run(**kwargs)
        run.state = DagRunState.RUNNING
        session.commit()
        run.dag = kwargs["dag"]
        return run

    with mock.patch.object(dagrun_module, "get_or_create_dagrun", keep_run):
        return RunResult(dag.test(logical_date=logical_date, run_after=logical_date))


def airflow_has_task_state_store() -> bool:
    """Airflow 3.3 brought the task state store (AIP-103); the CI subset also runs on 3.0."""
    import airflow

    major, minor = (int(part) for part in airflow.__version__.split(".")[:2])
    return (major, minor) >= (3, 3)


requires_task_state_store = pytest.mark.skipif(
    not airflow_has_task_state_store(), reason="Airflow < 3.3 has no task state store"
)


def task_state_store_value(run: Any, task_id: str, key: str, map_index: int = -1) -> Any:
    """What the task state store holds for a task instance of `run` (read from the metadata DB)."""
    import json

    from airflow._shared.state import TaskScope
    from airflow.state import get_state_backend

    raw = get_state_backend().get(
        TaskScope(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, map_index=map_index), key
    )
    return json.loads(raw) if raw is not None else None
