"""Landing with an `output_type` vs text only: one batch of 100,000 structured replies, landed both ways.

The emulator serves one ended batch whose requests asked for a `Label` natively (each reply a JSON
object in a text block). `land_results` lands it in a fresh process twice per repetition, once
without `output_type` (the text-only landing: one row per result, the JSON left as text) and once
with it (each output validated by Pydantic and given typed columns), interleaved; the figure is
the ratio of the medians. Run with this package's venv: `.venv/bin/python -m bench.land_structured 3`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

import httpx2
import msgspec

from bench.emulator_alone import HEADERS, start_emulator

COUNT = 100_000
VARIANTS = ("text only", "output_type")
_MODEL = """
from typing import Literal
from pydantic import BaseModel, Field

class Label(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)
    tags: list[str] = []
"""
_RUNNER = (
    _MODEL
    + r"""
import json, sys, time
from airflow.sdk import ObjectStoragePath
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.output.land import LandingSettings, land_results
from airflow_provider_claude_batch.requests.structured import output_spec
kind, batch_id, out = sys.argv[1:4]
hook = ClaudeBatchHook()
hook.retrieve_batch(batch_id)
settings = LandingSettings(output=output_spec(Label) if kind == "output_type" else None)
started = time.perf_counter()
manifest = land_results(hook, [batch_id], ObjectStoragePath("file://" + out), settings)
elapsed = time.perf_counter() - started
validated = manifest.get("structured_output", {}).get("validated", manifest["requests"])
print(json.dumps({"seconds": elapsed, "landed": manifest["requests"], "validated": validated}))
"""
)


def create_structured_batch(url: str, count: int) -> str:
    """One ended batch of `count` requests asking for a Label natively (the emulator answers each with one)."""
    namespace: dict[str, object] = {}
    exec(compile(_MODEL, "bench_model", "exec", dont_inherit=True), namespace)  # (the runner defines it too)
    from airflow_provider_claude_batch.requests.structured import output_spec

    asked = output_spec(namespace["Label"]).additions("native")
    requests = [
        {
            "custom_id": f"item-{i}",
            "params": {
                "model": "claude-sonnet-5-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Classify item {i}"}],
                **asked,
            },
        }
        for i in range(count)
    ]
    response = httpx2.post(
        url + "/v1/messages/batches", content=msgspec.json.encode({"requests": requests}), headers=HEADERS, timeout=600
    )
    response.raise_for_status()
    return str(response.json()["id"])


def land_once(kind: str, url: str, batch_id: str) -> dict[str, float]:
    env = {
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(
            {"conn_type": "claude_batch", "host": url, "password": "emulator-key", "extra": {"timeout": 600}}
        )
    }
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, kind, batch_id, out],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=900,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["landed"] != COUNT or result["validated"] != COUNT:
        raise RuntimeError(f"{kind} landed {result['landed']} ({result['validated']} validated) of {COUNT}")
    return result


def main(repeat: int) -> dict[str, float]:
    process, url = start_emulator()
    try:
        batch_id = create_structured_batch(url, COUNT)
        seconds: dict[str, list[float]] = {kind: [] for kind in VARIANTS}
        for _ in range(repeat):
            for kind in VARIANTS:
                seconds[kind].append(land_once(kind, url, batch_id)["seconds"])
    finally:
        process.terminate()
        process.wait(timeout=30)
    medians = {kind: statistics.median(values) for kind, values in seconds.items()}
    for kind, values in seconds.items():
        print(f"{kind:>12} {COUNT:,}: median {medians[kind]:.2f} s (runs: {', '.join(f'{v:.2f}' for v in values)})")
    ratio = medians["output_type"] / medians["text only"]
    fastest = min(seconds["output_type"]) / min(seconds["text only"])
    print(f"output_type / text only: {ratio:.2f}x (medians), {fastest:.2f}x (fastest runs)")
    return {**medians, "ratio": ratio, "fastest_ratio": fastest}


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
