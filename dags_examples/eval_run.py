"""Scheduled eval run: send the eval cases as one batch, then score the landed answers.

Use it for weekly model or prompt evaluations: `ClaudeBatchOperator` submits, waits deferred,
lands and resubmits what failed for the service's reasons, all in one task. Each answer is a
`ReviewLabel` (structured output), so `score` reads the landed table's typed `label` column (never
XCom, never parsing prose) and computes accuracy against the expected labels.
"""

from __future__ import annotations

import json

import pendulum
from _common import DATA, DEFAULT_ARGS, LABEL_PARAMS, MODEL, OUTPUT_ROOT, POLL_SECONDS, STORAGE_CONN, ReviewLabel
from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator

with DAG(
    "claude_batch_eval_run",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["claude-batch", "example"],
    doc_md=__doc__,
) as dag:
    answers = ClaudeBatchOperator(
        task_id="answers",
        rows_path=str(DATA / "eval_cases.jsonl"),
        custom_id_column="id",
        params_template=LABEL_PARAMS,
        model=MODEL,
        max_tokens=64,
        output_type=ReviewLabel,
        output_path=OUTPUT_ROOT + "/eval_run/{{ ds }}/",
        storage_conn_id=STORAGE_CONN,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        max_retry_rounds=2,
    )

    @task
    def score(summary: dict) -> dict:
        expected = {}
        with open(DATA / "eval_cases.jsonl") as cases:
            for line in cases:
                case = json.loads(line)
                expected[case["id"]] = case["expected"]
        results = ObjectStoragePath(summary["output_path"].rstrip("/") + "/results.jsonl")
        correct = answered = 0
        confidence = 0.0
        with results.open("rb") as rows:
            for line in rows.read().splitlines():  # small; and Airflow 3.0's file objects are not iterable
                row = json.loads(line)
                if row["label"] is None:  # failed, or an output that did not validate (see failures.jsonl)
                    continue
                answered += 1
                correct += row["label"] == expected[row["custom_id"]]
                confidence += row["confidence"]
        report = {
            "cases": len(expected),
            "answered": answered,
            "correct": correct,
            "accuracy": round(correct / len(expected), 4) if expected else 0.0,
            "mean_confidence": round(confidence / answered, 4) if answered else 0.0,
            "validated": summary["validated"],
        }
        print(f"Eval score: {report}")
        return report

    score(answers.output)
