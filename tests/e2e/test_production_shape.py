"""End to end on the production shape: CeleryExecutor with two workers that are two machines (each
its own AIRFLOW_HOME and local disk), two triggerers, PostgreSQL metadata DB, Redis broker, output
on an S3-compatible server, and no `state_path` anywhere: whatever a retry, a hand-off or a re-run
needs to find must be where every component reaches it.

Each drill reads the emulator's counters (batches created, cancel calls) before and after, so "one
batch per unit of work" and "nothing canceled" are facts about what the API was asked. Drills run in
file order on one deployment, one at a time, and print their figures for the closing note.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorConfig, EmulatorServer
from tests.e2e.prod_stack import TRIGGERERS, WORKERS, PostgresServer, ProductionStack, deployment_env, services
from tests.e2e.stack import deploy_variant, examples_env, install_dags, wait_for

REPO = Path(__file__).resolve().parents[2]
NIGHTLY = "claude_batch_nightly_classification"
EVAL = "claude_batch_eval_run"
BACKFILL = "claude_batch_backfill_partitions"
REVIEWS = 60
EVAL_CASES = 30
PROCESSING_SECONDS = 2.0
BACKFILL_DATES = [f"2026-11-{day:02d}" for day in range(1, 21)]

# Also `e2e`, so that `-m "not e2e"` skips every end-to-end suite; `-m e2e_prod` selects this one.
pytestmark = [pytest.mark.e2e, pytest.mark.e2e_prod, pytest.mark.timeout(1200)]


@dataclass
class Deployment:
    stack: ProductionStack
    postgres: PostgresServer
    emulator: EmulatorServer
    s3: Any
    bucket: str

    def batches(self) -> list[dict[str, Any]]:
        return list(self.emulator.control.state(custom_ids=False)["batches"])

    def manifest(self, flow: str, ds: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=self.bucket, Key=f"examples/{flow}/{ds}/_manifest.json")["Body"].read()
        return dict(json.loads(body))

    def assert_complete(self, flow: str, ds: str, expected: int) -> dict[str, Any]:
        manifest = self.manifest(flow, ds)
        assert manifest["requests"] == manifest["counts"].get("succeeded") == expected, manifest
        body = self.s3.get_object(Bucket=self.bucket, Key=f"examples/{flow}/{ds}/results.jsonl")["Body"].read()
        ids = [json.loads(line)["custom_id"] for line in body.splitlines()]
        assert len(ids) == len(set(ids)) == expected
        return manifest

    def trigger_of(self, dag_id: str, run_id: str, task_id: str) -> tuple[int | None, str | None]:
        """(trigger id, hostname of the triggerer running it) of a deferred task, from the metadata DB."""
        rows = self.postgres.query(
            "SELECT t.id, j.hostname FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
            "LEFT JOIN job j ON j.id = t.triggerer_id WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s",
            dag_id,
            run_id,
            task_id,
        )
        return rows[0] if rows else (None, None)


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Deployment]:
    import boto3

    home = tmp_path_factory.mktemp("e2e-prod-airflow")
    bucket = "e2e-prod-" + os.urandom(4).hex()
    dags = home / "dags"
    install_dags(dags, REPO / "dags_examples")
    # Runs only when a drill starts them: unpaused, a scheduled DAG would also start its latest run.
    for name, schedule in (("nightly_classification.py", '"@daily"'), ("eval_run.py", '"@weekly"')):
        deploy_variant(dags / name, dags / name, {f"schedule={schedule}": "schedule=None"})
    deploy_variant(dags / "backfill_partitions.py", dags / "backfill_partitions.py", {"catchup=True": "catchup=False"})

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket=bucket)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    emulator = EmulatorServer(EmulatorConfig(processing_seconds=PROCESSING_SECONDS)).start()
    emulator.control.set_outcomes({"match": ".*", "choices": ["positive", "negative", "neutral"]})
    env = deployment_env(
        {
            **examples_env(emulator.url, emulator.api_key, s3_server, f"s3://{bucket}/examples"),
            "CLAUDE_BATCH_EXAMPLES_STORAGE_CONN": "aws_default",
        }
    )
    started = time.monotonic()
    try:
        with services() as (postgres, redis):
            stack = ProductionStack(home, env, database_url=postgres.url, broker_url=redis.url)
            assert not any("STATE_PATH" in key for key in stack.env()), "the drills run with no state_path"
            try:
                stack.migrate()
                stack.start_all()
                for worker in WORKERS:
                    _wait_for_worker(stack, worker)
                stack.wait_for_dags([NIGHTLY, EVAL, BACKFILL])
                for dag_id in (NIGHTLY, EVAL, BACKFILL):
                    stack.unpause(dag_id)
                print(f"production-shape deployment up in {time.monotonic() - started:.0f} s")
                # The backfill DAG's latest scheduled run: the whole shape works before any drill.
                run = wait_for("the scheduler to start a run", lambda: stack.runs(BACKFILL), 120)[0]
                stack.wait_for_run(BACKFILL, run["dag_run_id"])
                yield Deployment(stack, postgres, emulator, s3, bucket)
            finally:
                stack.stop_all()
    finally:
        emulator.stop()


def _wait_for_worker(stack: ProductionStack, worker: str, log_offset: int = 0) -> None:
    """Until the worker's Celery says it consumes (in its log past `log_offset`)."""
    log = stack.logs / f"{worker}.log"
    wait_for(f"Celery {worker} to be ready", lambda: b" ready." in log.read_bytes()[log_offset:], 240)


def _trigger_log(stack: ProductionStack, triggerer: str, dag_id: str, run_id: str) -> str:
    """What `triggerer` logged for the triggers of one run (on its own machine's disk)."""
    folder = stack.machine_home(triggerer) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
    return "".join(path.read_text(errors="replace") for path in sorted(folder.rglob("*.log")))


def _figures(record_metric: Any, drill: str, made: list[dict[str, Any]], started: float) -> None:
    cancels = sum(batch["cancel_calls"] for batch in made)
    record_metric(
        f"production shape, {drill}",
        f"{len(made)} batches created, {cancels} cancel calls, {time.monotonic() - started:.0f} s",
    )


def test_worker_killed_right_after_create_retry_on_the_other_worker_reattaches(
    prod: Deployment,
    record_metric: Any,
) -> None:
    stack, control = prod.stack, prod.emulator.control
    started, before = time.monotonic(), len(prod.batches())
    # The API makes the batch and holds its answer: the worker dies before the task hears back.
    control.inject({"endpoint": "create", "kind": "lost_response", "mode": "timeout", "delay_seconds": 60})
    run_id = stack.trigger(EVAL, "2026-11-03T00:00:00Z")
    wait_for("the batch to be created", lambda: len(prod.batches()) > before, 180, interval=0.2)
    ti = stack.task_instances(EVAL, run_id)["answers"]
    assert ti["state"] == "running" and ti["try_number"] == 1, ti
    first = ti["hostname"]
    assert first in WORKERS, ti
    (other,) = set(WORKERS) - {first}
    stack.kill(first, signal.SIGKILL)  # the whole worker: Celery, the task's supervisor and the task
    try:
        stack.wait_for_run(EVAL, run_id, timeout=300)
    finally:
        control.clear_faults()
        offset = (stack.logs / f"{first}.log").stat().st_size
        stack.start(first)
        _wait_for_worker(stack, first, offset)

    retried = stack.task_instances(EVAL, run_id)["answers"]
    assert retried["try_number"] == 2 and retried["hostname"] == other, retried
    prod.assert_complete("eval_run", "2026-11-03", EVAL_CASES)
    made = prod.batches()[before:]
    _figures(record_metric, "worker killed after create", made, started)
    assert len(made) == 1, made  # the retry on the other machine adopted the batch the killed try made
    assert not made[0]["canceled"] and made[0]["cancel_calls"] == 0


def test_triggerer_frozen_past_its_heartbeat_hands_off_and_nothing_is_canceled(
    prod: Deployment,
    record_metric: Any,
) -> None:
    stack, control = prod.stack, prod.emulator.control
    started, before = time.monotonic(), len(prod.batches())

    def polls() -> int:
        return int(control.state(custom_ids=False)["calls"].get("retrieve", 0))

    control.configure(processing_seconds=3600)  # in progress until the clock is moved
    try:
        run_id = stack.trigger(EVAL, "2026-11-25T00:00:00Z")
        stack.wait_for_task_state(EVAL, run_id, "answers", {"deferred"})
        trigger_id, holder = wait_for(
            "a triggerer to take the trigger", lambda: (t := prod.trigger_of(EVAL, run_id, "answers"))[1] and t, 60, 0.5
        )
        assert holder in TRIGGERERS
        (other,) = set(TRIGGERERS) - {holder}
        seen = polls()
        wait_for(f"{holder} to poll the batch", lambda: polls() > seen + 2, 60, interval=0.5)

        stack.freeze(holder)
        frozen_at = time.monotonic()
        try:
            wait_for(
                f"the trigger to move to {other}",
                lambda: prod.trigger_of(EVAL, run_id, "answers") == (trigger_id, other),
                90,
                interval=0.5,
            )
            seen = polls()
            wait_for(f"{other} to poll the batch", lambda: polls() > seen + 2, 60, interval=0.5)
        finally:
            stack.thaw(holder)
        frozen_for = time.monotonic() - frozen_at
        # Thawed, the first triggerer finds the trigger is no longer its own and stops its copy;
        # Airflow 3.3 calls the trigger's on_kill for that (Airflow issue 73454). The operator's
        # trigger has cancel_on_kill: it must see the task is still deferred and leave the batch.
        wait_for(
            f"{holder} to call on_kill on its copy, which leaves the batch running",
            lambda: all(
                line in _trigger_log(stack, holder, EVAL, run_id)
                for line in ("Trigger cancelled by user action, invoking on_kill", "not failed: leaving batches")
            ),
            90,
            interval=1,
        )
        assert prod.trigger_of(EVAL, run_id, "answers") == (trigger_id, other)
        assert stack.task_instances(EVAL, run_id)["answers"]["state"] == "deferred"
        control.advance(3600)
    finally:
        control.configure(processing_seconds=PROCESSING_SECONDS)
    stack.wait_for_run(EVAL, run_id)

    prod.assert_complete("eval_run", "2026-11-25", EVAL_CASES)
    made = prod.batches()[before:]
    _figures(record_metric, f"triggerer frozen {frozen_for:.0f} s", made, started)
    assert len(made) == 1, made
    assert not made[0]["canceled"] and made[0]["cancel_calls"] == 0
    assert stack.task_instances(EVAL, run_id)["answers"]["try_number"] == 1


def test_scheduler_restarted_mid_run_completes_without_submitting_twice(prod: Deployment, record_metric: Any) -> None:
    stack, control = prod.stack, prod.emulator.control
    started, before = time.monotonic(), len(prod.batches())
    # The create answers after 10 s: the scheduler dies while the submit task is running on a worker.
    control.inject({"endpoint": "create", "kind": "delay", "delay_seconds": 10})
    try:
        run_id = stack.trigger(NIGHTLY, "2026-11-26T00:00:00Z")
        stack.wait_for_task_state(NIGHTLY, run_id, "submit", {"running"}, timeout=180)
        stack.kill("scheduler", signal.SIGKILL)
        time.sleep(5)
        stack.start("scheduler")
        stack.wait_for_run(NIGHTLY, run_id)
    finally:
        control.clear_faults()

    prod.assert_complete("nightly_classification", "2026-11-26", REVIEWS)
    made = prod.batches()[before:]
    tries = {task: ti["try_number"] for task, ti in stack.task_instances(NIGHTLY, run_id).items()}
    _figures(record_metric, f"scheduler restarted mid-run (tries {tries})", made, started)
    assert len(made) == 1, made
    assert not made[0]["canceled"] and made[0]["cancel_calls"] == 0


def test_backfill_of_twenty_dates_then_reprocessing_it_lands_twenty_partitions_with_twenty_batches(
    prod: Deployment,
    record_metric: Any,
) -> None:
    stack = prod.stack
    started, before = time.monotonic(), len(prod.batches())
    first = stack.create_backfill(BACKFILL, BACKFILL_DATES[0], BACKFILL_DATES[-1], reprocess="none", max_active_runs=8)
    runs = stack.wait_for_backfill(BACKFILL, first, timeout=900)
    assert sorted(runs) == BACKFILL_DATES
    manifests = {ds: prod.assert_complete("backfill_partitions", ds, REVIEWS) for ds in BACKFILL_DATES}
    after_first = len(prod.batches())
    first_took = time.monotonic() - started

    second = stack.create_backfill(
        BACKFILL, BACKFILL_DATES[0], BACKFILL_DATES[-1], reprocess="completed", max_active_runs=8
    )
    assert stack.wait_for_backfill(BACKFILL, second, timeout=900) == runs  # the same runs, cleared and run again
    made = prod.batches()[before:]
    _figures(record_metric, f"20-date backfill ({first_took:.0f} s) then reprocessed", made, started)
    assert after_first - before == 20
    assert len(made) == 20, "re-running the backfill created a batch"
    assert not any(batch["canceled"] or batch["cancel_calls"] for batch in made)
    for ds in BACKFILL_DATES:
        assert prod.assert_complete("backfill_partitions", ds, REVIEWS)["batches"] == manifests[ds]["batches"]
