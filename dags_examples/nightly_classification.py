"""Nightly classification ETL: label every review of the day and land one partition per logical date.

Use it for a scheduled job over rows in object storage: the submit task validates every row before
anything is spent, the sensor waits in the triggerer without a worker slot, and the results land in
`<output>/nightly_classification/<ds>/` with a manifest, token counts and cost. Each reply is a
`ReviewLabel` (structured output): it lands as typed `label` and `confidence` columns, and one that
does not validate is a failure row (`invalid_output`). Retries, clears and re-runs of a date
re-attach to the batch already submitted for it.
"""

from __future__ import annotations

import pendulum
from _common import DATA, DEFAULT_ARGS, LABEL_PARAMS, MODEL, OUTPUT_ROOT, POLL_SECONDS, STORAGE_CONN, ReviewLabel
from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.claude_batch import (
    ClaudeBatchResultsOperator,
    ClaudeBatchSubmitOperator,
)
from airflow_provider_claude_batch.sensors.claude_batch import ClaudeBatchSensor

with DAG(
    "claude_batch_nightly_classification",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["claude-batch", "example"],
    doc_md=__doc__,
) as dag:
    submit = ClaudeBatchSubmitOperator(
        task_id="submit",
        rows_path=str(DATA / "reviews.jsonl"),  # in production: "s3://bucket/reviews/{{ ds }}.jsonl"
        custom_id_column="id",
        params_template=LABEL_PARAMS,
        model=MODEL,
        max_tokens=64,
        output_type=ReviewLabel,
    )
    wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=POLL_SECONDS)
    land = ClaudeBatchResultsOperator(
        task_id="land",
        batch_ids=submit.output,
        output_path=OUTPUT_ROOT + "/nightly_classification/{{ ds }}/",
        storage_conn_id=STORAGE_CONN,
        formats=["jsonl", "csv"],
        output_type=ReviewLabel,
        max_failed_fraction=0.2,
    )
    submit >> wait >> land
