"""Run a DAG written as source through `dag.test()`: the file lands in the dags folder, as Airflow 3
needs for `dag.test()` to serialize it, and the returned run tells each task's state."""

from __future__ import annotations

import importlib.util
import textwrap
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers import AIRFLOW_VERSION

HEADER = """
import pendulum
from datetime import timedelta
from airflow.sdk import DAG
from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchSubmitOperator
from airflow_provider_claude_batch.sensors.claude_batch import ClaudeBatchSensor
from airflow_provider_claude_batch.submission import CreatePolicy
FAST = CreatePolicy(attempts=3, reconcile_seconds=2, reconcile_poll_seconds=0.2, backoff_seconds=0.1)
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
            row = session.scalars(XComModel.get_many(run_id=self.run.run_id, dag_ids=self.run.dag_id,
                                                     task_ids=task_id, key=key)).first()
            return XComModel.deserialize_value(row) if row is not None else None


def write_dag(dags_folder: Path, dag_id: str, body: str) -> Any:
    source = HEADER + f"\nwith DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz='UTC'), " \
        f"catchup=False) as dag:\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"
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
    """One run; the same `logical_date` again is a faithful clear-and-re-run (same run_id)."""
    register_like_the_dag_processor(dag)
    if logical_date is None:
        return RunResult(dag.test())
    return RunResult(dag.test(logical_date=logical_date, run_after=logical_date))
