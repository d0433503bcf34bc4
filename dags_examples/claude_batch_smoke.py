"""Smoke check of a `claude_batch` connection: submit a tiny batch, wait for it, read its results.

Use it once after setting up a connection (or against the local emulator) to see the whole round
trip work; it uses only `ClaudeBatchHook`. Real pipelines use the operators instead.
"""

from __future__ import annotations

import json
import os
import time

import pendulum
from airflow.sdk import dag, task

PROMPTS = {
    "greeting": "Say hello to an Airflow user in five words.",
    "haiku": "Write a haiku about batch jobs.",
    "fact": "Name one fact about the number 29.",
}
MODEL = os.environ.get("CLAUDE_BATCH_DEMO_MODEL", "claude-haiku-4-5")


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["claude-batch"])
def claude_batch_smoke() -> None:
    @task
    def submit() -> str:
        from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

        requests = [
            {"custom_id": name, "params": {"model": MODEL, "max_tokens": 64,
                                           "messages": [{"role": "user", "content": prompt}]}}
            for name, prompt in PROMPTS.items()
        ]
        batch = ClaudeBatchHook().create_batch(requests)
        print(f"Created batch {batch.id} with {len(requests)} requests")
        return batch.id

    @task
    def wait_and_read(batch_id: str) -> dict[str, str]:
        from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

        hook = ClaudeBatchHook()
        poll_seconds = float(os.environ.get("CLAUDE_BATCH_DEMO_POLL_SECONDS", "1"))
        while (batch := hook.retrieve_batch(batch_id)).processing_status != "ended":
            print(f"Batch {batch_id} is {batch.processing_status}; checking again in {poll_seconds:g} s")
            time.sleep(poll_seconds)
        print(f"Batch {batch_id} ended: {batch.request_counts.to_dict()}")
        outcome = {}
        for line in hook.iter_result_lines(batch):
            result = json.loads(line)
            kind = result["result"]["type"]
            text = result["result"]["message"]["content"][0]["text"] if kind == "succeeded" else kind
            outcome[result["custom_id"]] = text
            print(f"{result['custom_id']}: {text}")
        return outcome

    wait_and_read(submit())


smoke_dag = claude_batch_smoke()
