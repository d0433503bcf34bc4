"""End to end on real Airflow components: the example DAGs run under the scheduler, a LocalExecutor,
the DAG processor, the triggerer and the API server (each its own process, SQLite metadata, all on
loopback) against the emulator, and the drills kill and starve those components.

Every test reads the emulator's counters before and after, so "exactly one batch per unit of work"
and "no batch canceled" are facts about what the API was asked, not about what the tasks logged.
Tests run in file order on one deployment, one scenario at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorConfig, EmulatorServer
from tests.e2e.stack import AirflowStack, deploy_variant, examples_env, install_dags, wait_for

REPO = Path(__file__).resolve().parents[2]
NIGHTLY = "claude_batch_nightly_classification"
EVAL = "claude_batch_eval_run"
BACKFILL = "claude_batch_backfill_partitions"
S3_DAG = "claude_batch_e2e_nightly_s3"
DEADLINE_DAG = "claude_batch_nightly_by_deadline"
PARTITIONED = "claude_batch_partitioned_input"
REVIEWS = 60
EVAL_CASES = 30
PROCESSING_SECONDS = 2.0

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass
class Deployment:
    stack: AirflowStack
    emulator: EmulatorServer
    output: Path
    bucket: str
    s3_url: str
    scheduled: dict[str, dict[str, Any]]

    def batches(self) -> list[dict[str, Any]]:
        return list(self.emulator.control.state(custom_ids=False)["batches"])

    def responses(self) -> dict[str, int]:
        return dict(self.emulator.control.state(custom_ids=False)["responses"])

    def manifest(self, flow: str, ds: str) -> dict[str, Any]:
        return dict(json.loads((self.output / flow / ds / "_manifest.json").read_text()))

    def result_ids(self, flow: str, ds: str) -> list[str]:
        with open(self.output / flow / ds / "results.jsonl", "rb") as rows:
            return [json.loads(line)["custom_id"] for line in rows]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, s3_server: str) -> Iterator[Deployment]:
    import boto3

    home = tmp_path_factory.mktemp("e2e-airflow")
    bucket = "e2e-" + os.urandom(4).hex()
    install_dags(home / "dags", REPO / "dags_examples")
    # The backfill example has catchup on, as a UI-backfill DAG should; unpaused here it would also
    # catch up every day since its start date. The drill wants exactly the 7 dates it backfills.
    deploy_variant(
        home / "dags" / "backfill_partitions.py",
        home / "dags" / "backfill_partitions.py",
        {"catchup=True": "catchup=False"},
    )
    # The nightly example once more, unscheduled, landing on the S3-compatible server.
    deploy_variant(
        home / "dags" / "nightly_classification.py",
        home / "dags" / "e2e_nightly_s3.py",
        {
            f'"{NIGHTLY}"': f'"{S3_DAG}"',
            'schedule="@daily"': "schedule=None",
            'OUTPUT_ROOT + "/nightly_classification/{{ ds }}/"': f'"s3://{bucket}/nightly/{{{{ ds }}}}/"',
            "storage_conn_id=STORAGE_CONN": 'storage_conn_id="aws_default"',
        },
    )

    boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    emulator = EmulatorServer(EmulatorConfig(processing_seconds=PROCESSING_SECONDS)).start()
    emulator.control.set_outcomes({"match": ".*", "choices": ["positive", "negative", "neutral"]})
    output = home / "output"
    env = {
        **examples_env(emulator.url, emulator.api_key, s3_server, f"file://{output}"),
        "AIRFLOW__CLAUDE_BATCH__STATE_PATH": f"file://{home / 'state'}",
        # The deadline example, a minute away: (60 reviews / 8 + 1) waves x 1 s + 10 s reserved, so the
        # guard switches about 41 s after the run starts.
        "CLAUDE_BATCH_EXAMPLES_DEADLINE": "{{ dag_run.start_date + macros.timedelta(seconds=60) }}",
        "CLAUDE_BATCH_EXAMPLES_SYNC_LATENCY_SECONDS": "1",
        "CLAUDE_BATCH_EXAMPLES_LANDING_SECONDS": "10",
    }
    stack = AirflowStack(home, env)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    started = time.monotonic()
    try:
        stack.migrate()
        stack.start_all()
        stack.wait_for_dags([NIGHTLY, EVAL, BACKFILL, S3_DAG, DEADLINE_DAG, PARTITIONED])
        print(f"Airflow deployment up in {time.monotonic() - started:.0f} s")
        # Unpausing makes the scheduler start each scheduled DAG's latest run, as in production. Let
        # those finish first, so each drill below counts only its own batches.
        for dag_id in (NIGHTLY, EVAL, BACKFILL, S3_DAG):
            stack.unpause(dag_id)
        scheduled = {}
        for dag_id in (NIGHTLY, EVAL, BACKFILL):
            run = wait_for(f"the scheduler to start a run of {dag_id}", lambda dag_id=dag_id: stack.runs(dag_id), 120)[
                0
            ]
            scheduled[dag_id] = stack.wait_for_run(dag_id, run["dag_run_id"])
        print(f"Scheduled runs done {time.monotonic() - started:.0f} s after start")
        yield Deployment(stack, emulator, output, bucket, s3_server, scheduled)
    finally:
        stack.stop_all()
        emulator.stop()


def _ds(run: dict[str, Any]) -> str:
    return str(run["logical_date"])[:10]


def _assert_complete(deployment: Deployment, flow: str, ds: str, expected: int) -> dict[str, Any]:
    manifest = deployment.manifest(flow, ds)
    assert manifest["requests"] == expected
    assert manifest["counts"].get("succeeded") == expected
    ids = deployment.result_ids(flow, ds)
    assert len(ids) == len(set(ids)) == expected
    return manifest


def test_scheduled_runs_of_the_three_task_and_one_task_flows_land_complete_results(deployment: Deployment) -> None:
    stack = deployment.stack
    nightly, eval_run = deployment.scheduled[NIGHTLY], deployment.scheduled[EVAL]
    assert nightly["run_type"] == "scheduled" and eval_run["run_type"] == "scheduled"
    _assert_complete(deployment, "nightly_classification", _ds(nightly), REVIEWS)
    _assert_complete(deployment, "eval_run", _ds(eval_run), EVAL_CASES)
    score = stack.xcom(EVAL, eval_run["dag_run_id"], "score")
    assert score["cases"] == score["answered"] == EVAL_CASES
    landed = stack.xcom(NIGHTLY, nightly["dag_run_id"], "land")
    assert landed["counts"]["succeeded"] == REVIEWS
    # One batch per scheduled run (the backfill DAG's latest date is the third), none canceled.
    made = deployment.batches()
    ours = {
        *stack.xcom(NIGHTLY, nightly["dag_run_id"], "submit"),
        *stack.xcom(EVAL, eval_run["dag_run_id"], "answers")["batch_ids"],
    }
    assert len(made) == 3 and ours <= {batch["id"] for batch in made}
    assert not any(batch["canceled"] for batch in made)


def test_triggerer_killed_while_tasks_are_deferred_then_restarted_completes_with_one_batch_each(
    deployment: Deployment,
) -> None:
    stack, control = deployment.stack, deployment.emulator.control
    before = len(deployment.batches())
    control.configure(processing_seconds=3600)  # the batches stay in progress until the clock is moved
    try:
        nightly = stack.trigger(NIGHTLY, "2026-11-02T00:00:00Z")
        evaluation = stack.trigger(EVAL, "2026-11-02T00:00:00Z")
        stack.wait_for_task_state(NIGHTLY, nightly, "wait", {"deferred"})
        stack.wait_for_task_state(EVAL, evaluation, "answers", {"deferred"})
        polls = control.state(custom_ids=False)["calls"].get("retrieve", 0)
        wait_for(
            "the triggerer to poll the batches",
            lambda: control.state(custom_ids=False)["calls"].get("retrieve", 0) > polls + 2,
            60,
        )

        stack.kill("triggerer", signal.SIGKILL)
        time.sleep(3)
        tis = {**stack.task_instances(NIGHTLY, nightly), **stack.task_instances(EVAL, evaluation)}
        assert tis["wait"]["state"] == "deferred" and tis["answers"]["state"] == "deferred"
        stack.start("triggerer")
        control.advance(3600)
    finally:
        control.configure(processing_seconds=PROCESSING_SECONDS)
    stack.wait_for_run(NIGHTLY, nightly)
    stack.wait_for_run(EVAL, evaluation)

    _assert_complete(deployment, "nightly_classification", "2026-11-02", REVIEWS)
    _assert_complete(deployment, "eval_run", "2026-11-02", EVAL_CASES)
    made = deployment.batches()[before:]
    assert len(made) == 2, made  # one per unit of work: nothing was submitted again
    assert not any(batch["canceled"] or batch["cancel_calls"] for batch in made)
    assert stack.task_instances(NIGHTLY, nightly)["submit"]["try_number"] == 1
    assert stack.task_instances(EVAL, evaluation)["answers"]["try_number"] == 1


def test_task_process_killed_right_after_create_retry_reattaches(deployment: Deployment) -> None:
    stack, control = deployment.stack, deployment.emulator.control
    before = len(deployment.batches())
    # The API makes the batch and then holds its answer: the task is killed before it hears back.
    control.inject({"endpoint": "create", "kind": "lost_response", "mode": "timeout", "delay_seconds": 60})
    run_id = stack.trigger(EVAL, "2026-11-03T00:00:00Z")
    wait_for("the batch to be created", lambda: len(deployment.batches()) > before, 180, interval=0.2)
    ti = stack.task_instances(EVAL, run_id)["answers"]
    assert ti["state"] == "running" and ti["try_number"] == 1
    os.kill(int(ti["pid"]), signal.SIGKILL)

    stack.wait_for_run(EVAL, run_id)
    assert stack.task_instances(EVAL, run_id)["answers"]["try_number"] == 2
    _assert_complete(deployment, "eval_run", "2026-11-03", EVAL_CASES)
    made = deployment.batches()[before:]
    assert len(made) == 1, made  # the retry adopted the batch the killed try made
    assert not made[0]["canceled"]


def test_rate_limit_storm_and_two_hour_outage_while_waiting_are_ridden_out(deployment: Deployment) -> None:
    stack, control = deployment.stack, deployment.emulator.control
    before = len(deployment.batches())
    control.configure(processing_seconds=3 * 3600)
    try:
        run_id = stack.trigger(NIGHTLY, "2026-11-04T00:00:00Z")
        stack.wait_for_task_state(NIGHTLY, run_id, "wait", {"deferred"})
        start = deployment.responses()
        outage_started = control.now()
        control.inject(
            {"endpoint": "retrieve", "status": 429, "count": 4},
            {"endpoint": "retrieve", "status": 529, "count": 4},
            {"endpoint": "retrieve", "status": 503, "for_seconds": 2 * 3600},
        )

        def failed_polls() -> int:
            now = deployment.responses()
            return sum(now.get(f"retrieve {code}", 0) - start.get(f"retrieve {code}", 0) for code in (429, 529, 503))

        # Move through the two hours only while the trigger keeps polling into the errors.
        wait_for("the storm to be served", lambda: failed_polls() >= 8, 120, interval=0.5)
        for _ in range(5):  # 20-minute steps up to 1 h 40 min into the outage, each met by a failed poll
            seen = failed_polls()
            control.advance(20 * 60)
            wait_for("a poll during the outage", lambda seen=seen: failed_polls() > seen, 120, interval=0.5)
        assert control.now() < outage_started + 2 * 3600
        assert stack.task_instances(NIGHTLY, run_id)["wait"]["state"] == "deferred"
        control.advance(20 * 60 + 3600)  # the outage is over, and the batch has ended
    finally:
        control.configure(processing_seconds=PROCESSING_SECONDS)
        control.clear_faults()
    stack.wait_for_run(NIGHTLY, run_id)

    _assert_complete(deployment, "nightly_classification", "2026-11-04", REVIEWS)
    assert failed_polls() >= 8 + 5
    made = deployment.batches()[before:]
    assert len(made) == 1
    assert not made[0]["canceled"] and made[0]["cancel_calls"] == 0
    assert stack.task_instances(NIGHTLY, run_id)["wait"]["try_number"] == 1


def test_backfill_of_seven_dates_lands_seven_partitions_and_rerunning_it_creates_no_batch(
    deployment: Deployment,
) -> None:
    stack = deployment.stack
    dates = [f"2026-11-{day:02d}" for day in range(6, 13)]
    before = len(deployment.batches())
    runs = _backfill(stack, dates[0], dates[-1], reprocess="none")
    assert sorted(runs) == dates
    for ds in dates:
        _assert_complete(deployment, "backfill_partitions", ds, REVIEWS)
    backfill_batches = {stack.xcom(BACKFILL, run_id, "classify_partition")["batch_ids"][0] for run_id in runs.values()}
    assert len(backfill_batches) == 7
    created = deployment.batches()[before:]
    assert backfill_batches <= {batch["id"] for batch in created}
    manifests = {ds: deployment.manifest("backfill_partitions", ds) for ds in dates}

    after_first = len(deployment.batches())
    rerun = _backfill(stack, dates[0], dates[-1], reprocess="completed")
    assert rerun == runs  # the same runs, cleared and run again
    assert len(deployment.batches()) == after_first, "re-running the backfill created a batch"
    for ds in dates:
        manifest = _assert_complete(deployment, "backfill_partitions", ds, REVIEWS)
        assert manifest["batches"] == manifests[ds]["batches"]


def _backfill(stack: AirflowStack, first: str, last: str, *, reprocess: str) -> dict[str, str]:
    with stack.writers_stopped():
        backfill_id = stack.create_backfill(BACKFILL, first, last, reprocess=reprocess, max_active_runs=4)
    return stack.wait_for_backfill(BACKFILL, backfill_id)


def test_output_to_an_s3_compatible_server_lands_like_local_output(deployment: Deployment) -> None:
    import boto3

    stack = deployment.stack
    before = len(deployment.batches())
    run_id = stack.trigger(S3_DAG, "2026-11-05T00:00:00Z")
    stack.wait_for_run(S3_DAG, run_id)

    s3 = boto3.client(
        "s3",
        endpoint_url=deployment.s3_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    prefix = "nightly/2026-11-05/"
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=deployment.bucket, Prefix=prefix)["Contents"]}
    manifest = json.loads(s3.get_object(Bucket=deployment.bucket, Key=prefix + "_manifest.json")["Body"].read())
    assert manifest["requests"] == manifest["counts"]["succeeded"] == REVIEWS
    for info in manifest["files"]:
        body = s3.get_object(Bucket=deployment.bucket, Key=prefix + info["name"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == info["sha256"]
        assert len(body) == info["bytes"]
    assert {prefix + "results.jsonl", prefix + "results.csv", prefix + "_manifest.json"} <= keys
    assert not any("staging" in key or key.endswith(".partial") for key in keys)
    assert len(deployment.batches()) == before + 1


def test_the_deadline_example_cancels_at_the_switch_time_and_sends_the_stragglers_to_the_messages_api(
    deployment: Deployment,
) -> None:
    stack, control = deployment.stack, deployment.emulator.control
    before = deployment.batches()
    # Three reviews held unfinished in their batch (stragglers), the rest answered as usual.
    control.set_outcomes(
        {"match": "review-000[0-2]", "straggle": True},
        {"match": ".*", "choices": ["positive", "negative", "neutral"]},
    )
    try:
        stack.unpause(DEADLINE_DAG)  # the scheduler starts the latest interval's run
        run = wait_for("the scheduler to start the deadline example", lambda: stack.runs(DEADLINE_DAG), 120)[0]
        finished = stack.wait_for_run(DEADLINE_DAG, run["dag_run_id"], timeout=300)
    finally:
        control.set_outcomes({"match": ".*", "choices": ["positive", "negative", "neutral"]})
    assert finished["state"] == "success"
    manifest = _assert_complete(deployment, "nightly_by_deadline", _ds(run), REVIEWS)
    assert manifest["routes"]["sync"]["requests"] == 3 and manifest["routes"]["batch"]["requests"] == REVIEWS - 3
    assert manifest["cost"]["deadline_premium_usd"] > 0
    made = deployment.batches()[len(before) :]
    assert len(made) == 1 and made[0]["canceled"] and made[0]["cancel_calls"] == 1
    answered = control.state(custom_ids=False)["messages_answered"]
    assert answered == {"review-0000": 1, "review-0001": 1, "review-0002": 1}


def test_the_partitioned_example_shares_one_pool_sized_in_requests_and_rolls_the_partitions_up(
    deployment: Deployment,
) -> None:
    stack = deployment.stack
    # The queue limit in requests (here 40: two partitions of 20), deferred partitions counted in it.
    pool = {"name": "claude_batch_queue", "slots": 40, "description": "Claude batch queue, in requests"}
    stack.request("POST", "/api/v2/pools", {**pool, "include_deferred": True})
    before = len(deployment.batches())
    stack.unpause(PARTITIONED)
    run_id = stack.trigger(PARTITIONED, "2026-11-06T00:00:00Z")
    assert stack.wait_for_run(PARTITIONED, run_id, timeout=400)["state"] == "success"
    rolled = json.loads((deployment.output / "partitioned_input" / "2026-11-06" / "_rollup_manifest.json").read_text())
    assert len(rolled["partitions"]) == REVIEWS // 20
    assert rolled["requests"] == rolled["counts"]["succeeded"] == REVIEWS
    made = deployment.batches()[before:]
    assert len(made) == REVIEWS // 20
    spans = [(datetime.fromisoformat(b["created_at"]), datetime.fromisoformat(b["ended_at"])) for b in made]
    for created, _ in spans:  # never more batches in flight at once than the pool holds partitions
        assert sum(1 for start, end in spans if start <= created < end) <= 2
