"""Nightly classification with results by 07:00: the batch price for what is done by then, the
Messages API for what is late.

Use it when a batch's 24 h promise is too loose for a morning report. The task logs its switch time
at submit ("requests still unfinished at 06:12 will be sent to the Messages API"); at that time a
batch still running is canceled (what it finished is kept at the batch price), and its unfinished
requests go to the Messages API, 8 at a time, at the standard price, capped by `max_sync_cost_usd`.
Every landed row says its `route`; the manifest gives rows, tokens and dollars per route and the
premium paid for the deadline. A deadline even the Messages API alone cannot meet fails before
anything is paid for; retries and clears re-attach and never send a request twice.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _common import (
    CLASSIFY_PARAMS,
    DATA,
    DEADLINE,
    DEFAULT_ARGS,
    LANDING_SECONDS,
    MODEL,
    OUTPUT_ROOT,
    POLL_SECONDS,
    STORAGE_CONN,
    SYNC_LATENCY_SECONDS,
)
from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator, SyncPolicy

with DAG(
    "claude_batch_nightly_by_deadline",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["claude-batch", "example"],
    doc_md=__doc__,
) as dag:
    ClaudeBatchOperator(
        task_id="classify",
        rows_path=str(DATA / "reviews.jsonl"),  # in production: "s3://bucket/reviews/{{ ds }}.jsonl"
        custom_id_column="id",
        params_template=CLASSIFY_PARAMS,
        model=MODEL,
        max_tokens=5,
        output_path=OUTPUT_ROOT + "/nightly_by_deadline/{{ ds }}/",
        storage_conn_id=STORAGE_CONN,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        deadline=DEADLINE,  # templated: "{{ data_interval_end + macros.timedelta(hours=7) }}"
        sync_concurrency=8,
        max_sync_cost_usd=5.0,
        sync_policy=SyncPolicy(
            request_latency=timedelta(seconds=SYNC_LATENCY_SECONDS), landing_time=timedelta(seconds=LANDING_SECONDS)
        ),
    )
