"""DAGs only the end-to-end suite uses, beside the copied examples.

- `claude_batch_e2e_s3`: the nightly three-task flow with its output on the S3-compatible server
  (bucket and connection from the suite's environment).
"""

from __future__ import annotations

import os

import pendulum
from _common import CLASSIFY_PARAMS, DATA, DEFAULT_ARGS, MODEL, POLL_SECONDS
from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.claude_batch import (
    ClaudeBatchResultsOperator,
    ClaudeBatchSubmitOperator,
)
from airflow_provider_claude_batch.sensors.claude_batch import ClaudeBatchSensor

with DAG(
    "claude_batch_e2e_s3",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["claude-batch", "e2e"],
) as dag:
    submit = ClaudeBatchSubmitOperator(
        task_id="submit",
        rows_path=str(DATA / "reviews.jsonl"),
        custom_id_column="id",
        params_template=CLASSIFY_PARAMS,
        model=MODEL,
        max_tokens=5,
    )
    wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=POLL_SECONDS)
    land = ClaudeBatchResultsOperator(
        task_id="land",
        batch_ids=submit.output,
        output_path=f"s3://{os.environ.get('E2E_S3_BUCKET', 'unset')}/nightly/{{{{ ds }}}}/",
        storage_conn_id="aws_default",
        formats=["jsonl", "csv"],
    )
    submit >> wait >> land
