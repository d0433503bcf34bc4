"""Smoke check of a `claude_batch` connection: submit a tiny batch, wait for it deferred, read it.

Use it once after setting up a connection (or against the local emulator) to see the round trip
work: `ClaudeBatchSubmitOperator` validates and submits, `ClaudeBatchSensor` waits in the
triggerer (no worker slot), and a small task reads the results through the hook.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import dag, task

from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchSubmitOperator
from airflow_provider_claude_batch.sensors.claude_batch import ClaudeBatchSensor

PROMPTS = {
    "greeting": "Say hello to an Airflow user in five words.",
    "haiku": "Write a haiku about batch jobs.",
    "fact": "Name one fact about the number 29.",
}


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["claude-batch"])
def claude_batch_smoke() -> None:
    submit = ClaudeBatchSubmitOperator(
        task_id="submit",
        requests=[
            {"custom_id": name, "params": {"messages": [{"role": "user", "content": prompt}]}}
            for name, prompt in PROMPTS.items()
        ],
        model=os.environ.get("CLAUDE_BATCH_DEMO_MODEL", "claude-haiku-4-5"),
        max_tokens=64,
    )
    wait = ClaudeBatchSensor(
        task_id="wait",
        batch_ids=submit.output,
        deferrable=True,
        poke_interval=float(os.environ.get("CLAUDE_BATCH_DEMO_POLL_SECONDS", "30")),
    )

    @task
    def read_results(batch_ids: list[str]) -> dict[str, str]:
        from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

        hook = ClaudeBatchHook()
        outcome = {}
        for batch_id in batch_ids:
            for line in hook.iter_result_lines(batch_id):
                result = json.loads(line)
                kind = result["result"]["type"]
                text = result["result"]["message"]["content"][0]["text"] if kind == "succeeded" else kind
                outcome[result["custom_id"]] = text
                print(f"{result['custom_id']}: {text}")
        return outcome

    wait >> read_results(submit.output)


smoke_dag = claude_batch_smoke()
