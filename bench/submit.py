"""Figure 2, submit: from a JSONL file of 100,000 requests to a batch ID, wall time and peak RSS.

Each contender runs in its own process (so its peak RSS is its own) against one emulator process:
- raw POST: the body already serialized on disk, read and POSTed (the floor);
- plain SDK: JSONL to a list of dicts, then `client.messages.batches.create(requests=...)`;
- anthropic provider: the same list through `AnthropicHook.create_batch`;
- ours: `prepare_requests` (validate, serialize once), the prompt-caching pass (on by default; it finds
  no shared prefix here) and `create_batch_streamed`;
- ours + preflight: the same, with preflight (Models API lookup, a stratified sample of token counts,
  the cost estimate) between preparing and creating, as every submitting task runs by default.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.child import run_child

CONTENDERS = ("raw POST", "plain SDK", "anthropic provider 1.2.0", "ours", "ours + preflight")

_RUNNER = r"""
import json, sys, time
def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
kind, url, jsonl, body_path = sys.argv[1:5]
import anthropic, httpx2, msgspec
from anthropic.types.messages import MessageBatch
if kind == "anthropic provider 1.2.0":
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook
if kind.startswith("ours"):
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.input.read import iter_jsonl
    from airflow_provider_claude_batch.requests.caching import add_cache_breakpoints
    from airflow_provider_claude_batch.requests.hashing import prepare_requests
    from airflow_provider_claude_batch.requests.plan import plan_batches
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
started = time.perf_counter()
if kind == "raw POST":
    with open(body_path, "rb") as f:
        body = f.read()
    r = httpx2.post(url + "/v1/messages/batches", content=body, timeout=600,
                    headers={"x-api-key": "emulator-key", "anthropic-version": "2023-06-01",
                             "content-type": "application/json"})
    batch_id = r.json()["id"]
elif kind == "plain SDK":
    with open(jsonl, "rb") as f:
        requests = [json.loads(line) for line in f]
    client = anthropic.Anthropic(base_url=url, api_key="emulator-key", max_retries=0, timeout=600)
    batch_id = client.messages.batches.create(requests=requests).id
elif kind == "anthropic provider 1.2.0":
    with open(jsonl, "rb") as f:
        requests = [json.loads(line) for line in f]
    batch_id = AnthropicHook().create_batch(requests).id
else:
    with open(jsonl, "rb") as f:
        prepared, problems, bad = prepare_requests(iter_jsonl(f))
    assert not bad, problems
    prepared, cache_plan = add_cache_breakpoints(prepared)  # prompt_caching="auto", the default: finds nothing here
    assert not cache_plan.prefixes
    (plan,) = plan_batches(prepared)
    prepare_seconds = time.perf_counter() - started
    hook = ClaudeBatchHook()
    if kind == "ours + preflight":
        from airflow_provider_claude_batch.preflight.run import run_preflight
        hook.client  # built here rather than by the create (which both contenders pay for once)
        before = time.perf_counter()
        run_preflight(hook, prepared)
        preflight_seconds = time.perf_counter() - before
    batch_id = hook.create_batch_streamed(prepared.iter_body(plan.first, plan.stop), plan.body_bytes).id
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "peak_growth": status("VmHWM") - base, "batch_id": batch_id,
                  "prepare_seconds": locals().get("prepare_seconds"),
                  "preflight_seconds": locals().get("preflight_seconds")}))
"""


@dataclass
class SubmitFigure:
    body_mb: float
    seconds: dict[str, list[float]] = field(default_factory=dict)
    peak_mb: dict[str, list[float]] = field(default_factory=dict)
    ours_prepare_seconds: list[float] = field(default_factory=list)
    preflight_seconds: list[float] = field(default_factory=list)


def write_inputs(folder: Path, count: int = 100_000) -> tuple[Path, Path, int]:
    padding = "x" * 1000
    jsonl = folder / "requests.jsonl"
    body = folder / "body.json"
    with open(jsonl, "w") as lines:
        for i in range(count):
            lines.write(
                json.dumps(
                    {
                        "custom_id": f"r-{i}",
                        "params": {
                            "model": "claude-sonnet-5-5",
                            "max_tokens": 64,
                            "messages": [{"role": "user", "content": f"{padding} {i}"}],
                        },
                    }
                )
                + "\n"
            )
    with open(jsonl, "rb") as source, open(body, "wb") as target:
        target.write(b'{"requests":[')
        for number, line in enumerate(source):
            target.write((b"," if number else b"") + line.rstrip(b"\n"))
        target.write(b"]}")
    return jsonl, body, os.path.getsize(body)


def measure(url: str, repeat: int, contenders: tuple[str, ...] = CONTENDERS) -> SubmitFigure:
    env = {
        **os.environ,
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(
            {
                "conn_type": "anthropic",
                "host": url,
                "password": "emulator-key",
                "extra": {"anthropic_client_kwargs": {"timeout": 600}},
            }
        ),
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(
            {"conn_type": "claude_batch", "host": url, "password": "emulator-key", "extra": {"timeout": 600}}
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        jsonl, body, size = write_inputs(Path(tmp))
        figure = SubmitFigure(size / 1e6)
        for _ in range(repeat):
            for kind in contenders:
                result = run_child(["-c", _RUNNER, kind, url, str(jsonl), str(body)], env=env, timeout=900, what=kind)
                figure.seconds.setdefault(kind, []).append(result["seconds"])
                figure.peak_mb.setdefault(kind, []).append(result["peak_growth"] / 1e6)
                if result["prepare_seconds"] is not None and kind == "ours":
                    figure.ours_prepare_seconds.append(result["prepare_seconds"])
                if result["preflight_seconds"] is not None:
                    figure.preflight_seconds.append(result["preflight_seconds"])
    return figure


def median(values: list[float]) -> float:
    return statistics.median(values)
