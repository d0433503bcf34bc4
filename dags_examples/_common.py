"""Settings shared by the example DAGs: where sample input lives and where results land.

Override with environment variables to point the examples at your own storage, e.g.
CLAUDE_BATCH_EXAMPLES_OUTPUT=s3://my-bucket/claude-batch (with CLAUDE_BATCH_EXAMPLES_STORAGE_CONN=aws_default).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

DATA = Path(__file__).resolve().parent / "data"
OUTPUT_ROOT = os.environ.get(
    "CLAUDE_BATCH_EXAMPLES_OUTPUT",
    "file://" + os.path.join(os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "claude_batch_output"),
).rstrip("/")
STORAGE_CONN = os.environ.get("CLAUDE_BATCH_EXAMPLES_STORAGE_CONN") or None
MODEL = os.environ.get("CLAUDE_BATCH_EXAMPLES_MODEL", "claude-haiku-4-5")
POLL_SECONDS = float(os.environ.get("CLAUDE_BATCH_EXAMPLES_POLL_SECONDS", "60"))
# Retries are safe here: a retried submit re-attaches to the batch its earlier try created.
DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": timedelta(seconds=float(os.environ.get("CLAUDE_BATCH_EXAMPLES_RETRY_DELAY_SECONDS", "300"))),
}
LABELS = ("positive", "negative", "neutral")
CLASSIFY_PARAMS = {
    "system": "You label customer reviews. Answer with exactly one word: positive, negative or neutral.",
    "messages": [{"role": "user", "content": "Review: {text}"}],
}
# With an output_type the reply is an object, not a word: the prompt asks for the label and a confidence.
LABEL_PARAMS = {
    "system": "You label customer reviews by sentiment, with how confident you are (0 to 1).",
    "messages": [{"role": "user", "content": "Review: {text}"}],
}


class ReviewLabel(BaseModel):
    """What each review's reply must be: it lands as the `label` and `confidence` columns."""

    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)


# Results by a deadline (nightly_by_deadline.py): 07:00 UTC the morning after the data interval,
# with what a Messages API call takes here; demos and tests set a deadline minutes away.
DEADLINE = os.environ.get("CLAUDE_BATCH_EXAMPLES_DEADLINE", "{{ data_interval_end + macros.timedelta(hours=7) }}")
SYNC_LATENCY_SECONDS = float(os.environ.get("CLAUDE_BATCH_EXAMPLES_SYNC_LATENCY_SECONDS", "20"))
LANDING_SECONDS = float(os.environ.get("CLAUDE_BATCH_EXAMPLES_LANDING_SECONDS", "300"))
