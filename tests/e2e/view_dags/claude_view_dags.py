"""DAGs that leave the emulator holding a batch in each state the Claude Batches view shows.

`claude_view_landing` submits two batches (the emulator ends them within a second) and lands one:
the other is ended and never landed, so it is at risk. `claude_view_in_flight`, run after the test
has made the emulator's batches take an hour, submits a batch that is still processing.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_claude_batch.operators.claude_batch import (
    ClaudeBatchResultsOperator,
    ClaudeBatchSubmitOperator,
)

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def requests(prefix: str, n: int) -> list[dict[str, object]]:
    return [
        {"custom_id": f"{prefix}-{i}", "params": {"messages": [{"role": "user", "content": f"Row {i}"}]}}
        for i in range(n)
    ]


with DAG("claude_view_landing", schedule=None, start_date=START, catchup=False, tags=["claude-batch"]):
    unlanded = ClaudeBatchSubmitOperator(
        task_id="submit_never_landed", requests=requests("risk", 4), model="claude-haiku-4-5", max_tokens=8
    )
    landed = ClaudeBatchSubmitOperator(
        task_id="submit", requests=requests("land", 6), model="claude-haiku-4-5", max_tokens=8
    )

    land = ClaudeBatchResultsOperator(
        task_id="land", batch_ids=landed.output, output_path=os.environ["CLAUDE_VIEW_OUTPUT"] + "/{{ run_id }}/"
    )
    unlanded >> land


with DAG("claude_view_in_flight", schedule=None, start_date=START, catchup=False, tags=["claude-batch"]):
    ClaudeBatchSubmitOperator(task_id="submit", requests=requests("live", 10), model="claude-haiku-4-5", max_tokens=8)
