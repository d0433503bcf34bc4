"""Backfill-friendly partitions: one batch per logical date, catchup on, and a queue guard.

Use it when you trigger backfills from the Airflow UI over many dates at once: each date submits
its own batch (re-running a date re-attaches, never pays twice), and a `QueuePolicy` makes a date
wait, deferred, for room in the organization's batch queue instead of being refused.
"""

from __future__ import annotations

import pendulum
from _common import CLASSIFY_PARAMS, DATA, DEFAULT_ARGS, MODEL, OUTPUT_ROOT, POLL_SECONDS, STORAGE_CONN
from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator, QueuePolicy

with DAG(
    "claude_batch_backfill_partitions",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=True,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    tags=["claude-batch", "example"],
    doc_md=__doc__,
) as dag:
    ClaudeBatchOperator(
        task_id="classify_partition",
        rows_path=str(DATA / "reviews.jsonl"),  # in production: "s3://bucket/reviews/{{ ds }}.jsonl"
        custom_id_column="id",
        params_template=CLASSIFY_PARAMS,
        model=MODEL,
        max_tokens=5,
        output_path=OUTPUT_ROOT + "/backfill_partitions/{{ ds }}/",
        storage_conn_id=STORAGE_CONN,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        queue=QueuePolicy(max_queued_requests=150_000),
    )
