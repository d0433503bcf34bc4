"""Figure 8, scale: submit and land 10,000, 100,000 and 1,000,000 requests in batches of 20,000.

Each step runs in its own process (its peak RSS its own) against one emulator process per size:
- submit: a JSONL file of N requests (about 560 bytes each) read, validated, serialized and split
  (`prepare_requests`: past one batch the requests go to a local spill file), then each batch's body
  streamed to the API (`create_batch_streamed`);
- land: the N results of those batches landed by `land_results` (raw copies, the table, failures and
  the manifest), with `concurrency=4` (the next batches downloaded while one is folded).
The curve per request must be flat (seconds per 100,000) and the peak RSS growth bounded by about one
batch plus what is kept per request. The published packages are left out: they hold the whole input
as Python objects (figure 2: about 4.7x the body at 100,000 requests), so 1,000,000 does not fit them.
Usage alone: python -m bench.scale 10000,100000 (bench/run runs all three sizes).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.child import run_child

SIZES = (10_000, 100_000, 1_000_000)
PER_BATCH = 20_000
PADDING = "x" * 960  # about 1.1 KB a request: 1,000,000 make the 1.1 GB of JSONL
PROVIDER = "anthropic provider 1.2.0"

_RUNNER = r"""
import json, sys, time
def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
step, jsonl, per_batch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.input.read import iter_jsonl
from airflow_provider_claude_batch.output.land import LandingSettings, land_results
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.plan import plan_batches
from airflow_provider_claude_batch.storage import as_path
hook = ClaudeBatchHook()
hook.list_batches(limit=1)  # the SDK and its client loaded before measuring
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
started = time.perf_counter()
if step == "submit":
    from airflow_provider_claude_batch.preflight.run import run_preflight
    from airflow_provider_claude_batch.requests.caching import add_cache_breakpoints
    with open(jsonl, "rb") as f:
        prepared, problems, bad = prepare_requests(iter_jsonl(f), spill_above_requests=per_batch)
    assert not bad, problems
    prepared, _ = add_cache_breakpoints(prepared)  # what a task does by default: prompt_caching="auto"
    run_preflight(hook, prepared)  # and preflight=True
    plans = plan_batches(prepared, max_requests=per_batch)
    ids = [hook.create_batch_streamed(prepared.iter_body(p.first, p.stop), p.body_bytes).id for p in plans]
    result = {"batch_ids": ids, "body_mb": max(p.body_bytes for p in plans) / 1e6}
elif step == "provider":
    from airflow.providers.anthropic.hooks.anthropic import AnthropicHook
    with open(jsonl, "rb") as f:
        requests = [json.loads(line) for line in f]
    result = {"batch_ids": [AnthropicHook().create_batch(requests).id], "body_mb": 0.0}
else:
    ids = json.loads(open(jsonl).read())
    manifest = land_results(hook, ids, as_path(out), LandingSettings(concurrency=4))
    result = {"requests": manifest["requests"]}
result |= {"seconds": time.perf_counter() - started, "peak_growth": status("VmHWM") - base}
print(json.dumps(result))
"""


@dataclass
class ScaleFigure:
    jsonl_mb: dict[int, float] = field(default_factory=dict)
    body_mb: dict[int, float] = field(default_factory=dict)
    submit_seconds: dict[int, float] = field(default_factory=dict)
    submit_peak_mb: dict[int, float] = field(default_factory=dict)
    land_seconds: dict[int, float] = field(default_factory=dict)
    land_peak_mb: dict[int, float] = field(default_factory=dict)
    provider_seconds: dict[int, float] = field(default_factory=dict)
    provider_peak_mb: dict[int, float] = field(default_factory=dict)
    provider_absent: bool = False


def write_input(path: Path, count: int) -> None:
    with path.open("w") as file:
        for i in range(count):
            params = {
                "model": "claude-sonnet-5-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"{PADDING} {i}"}],
            }
            file.write(json.dumps({"custom_id": f"r-{i}", "params": params}) + "\n")


def _run(url: str, step: str, source: Path, out: Path) -> dict[str, object]:
    env = {
        **os.environ,
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(
            {"conn_type": "claude_batch", "host": url, "password": "emulator-key", "extra": {"timeout": 600}}
        ),
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(
            {
                "conn_type": "anthropic",
                "host": url,
                "password": "emulator-key",
                "extra": {"anthropic_client_kwargs": {"timeout": 600}},
            }
        ),
    }
    return run_child(["-c", _RUNNER, step, str(source), str(PER_BATCH), str(out)], env=env, timeout=3600, what=step)


API_MAX_REQUESTS = 100_000  # (the create limit: a package that does not split cannot go past it)


def _provider_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("airflow.providers.anthropic") is not None
    except ModuleNotFoundError:
        return False


def measure(sizes: tuple[int, ...] = SIZES) -> ScaleFigure:
    """Each size against a fresh emulator process."""
    from bench.emulator_alone import start_emulator

    figure = ScaleFigure()
    for count in sizes:
        process, url = start_emulator()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                jsonl = Path(tmp) / "requests.jsonl"
                write_input(jsonl, count)
                figure.jsonl_mb[count] = jsonl.stat().st_size / 1e6
                submitted = _run(url, "submit", jsonl, Path(tmp))
                if count <= API_MAX_REQUESTS and _provider_installed():  # one create: it does not split
                    theirs = _run(url, "provider", jsonl, Path(tmp))
                    figure.provider_seconds[count] = float(theirs["seconds"])  # type: ignore[arg-type]
                    figure.provider_peak_mb[count] = int(theirs["peak_growth"]) / 1e6  # type: ignore[call-overload]
                figure.provider_absent = not _provider_installed()
                jsonl.unlink()
                ids = Path(tmp) / "ids.json"
                ids.write_text(json.dumps(submitted["batch_ids"]))
                landed = _run(url, "land", ids, Path(tmp) / "out")
                if landed["requests"] != count:
                    raise RuntimeError(f"landed {landed['requests']} of {count} results")
                figure.body_mb[count] = float(submitted["body_mb"])  # type: ignore[arg-type]
                figure.submit_seconds[count] = float(submitted["seconds"])  # type: ignore[arg-type]
                figure.submit_peak_mb[count] = int(submitted["peak_growth"]) / 1e6  # type: ignore[call-overload]
                figure.land_seconds[count] = float(landed["seconds"])  # type: ignore[arg-type]
                figure.land_peak_mb[count] = int(landed["peak_growth"]) / 1e6  # type: ignore[call-overload]
        finally:
            process.terminate()
            process.wait(timeout=30)
    return figure


def section(figure: ScaleFigure) -> list[str]:
    """The BENCHMARKS.md section."""
    lines = [
        "## 8. Scale: submit and land 10,000 to 1,000,000 requests",
        "",
        f"A JSONL file of N requests (about 1.1 KB each: 1,000,000 make 1.1 GB), submitted the way a task does "
        f"(validated and serialized, the prompt-caching pass, preflight: model lookup, token counts, estimate) in "
        f"batches of {PER_BATCH:,} (one batch body about 22 MB), and its N results landed with "
        "`LandingPolicy(concurrency=4)`; each step in its own process (its peak RSS growth its own) against an "
        f"emulator process per size; one run per size. {PROVIDER} submits the same file with one create "
        "(it does not split: past the API's 100,000 requests it cannot run at all).",
        "",
        "| requests | JSONL MB | submit s | submit s per 100k | submit peak RSS growth MB | "
        "land s | land s per 100k | land peak RSS growth MB | "
        f"{PROVIDER}: submit s per 100k | its peak RSS growth MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for count in sorted(figure.submit_seconds):
        per = 100_000 / count
        if count in figure.provider_seconds:
            theirs = f"{figure.provider_seconds[count] * per:.2f} | {figure.provider_peak_mb[count]:.0f}"
        elif figure.provider_absent:
            theirs = "not installed (bench/run installs it) | -"
        else:
            theirs = "cannot run (one create over 100,000 requests) | -"
        lines.append(
            f"| {count:,} | {figure.jsonl_mb[count]:.0f} | {figure.submit_seconds[count]:.2f} | "
            f"{figure.submit_seconds[count] * per:.2f} | {figure.submit_peak_mb[count]:.0f} | "
            f"{figure.land_seconds[count]:.2f} | {figure.land_seconds[count] * per:.2f} | "
            f"{figure.land_peak_mb[count]:.0f} | {theirs} |"
        )
    largest = max(figure.submit_seconds)
    body = max(figure.body_mb.values())
    bounded = all(figure.submit_peak_mb[c] < 2 * figure.body_mb[c] for c in figure.submit_seconds if c > PER_BATCH)
    lines += [
        "",
        f"Targets: seconds per 100,000 flat across sizes; submit's peak RSS growth under 2x one batch's body "
        f"({2 * body:.0f} MB here) and not growing with the input: "
        f"{'met' if bounded else 'NOT met'} (at {largest:,} requests: {figure.submit_peak_mb[largest]:.0f} MB). "
        "Nothing is kept in memory per request: offsets, custom_ids and preflight facts spill with the items "
        "(requests/columns.py), the duplicate custom_id check moves to a temporary SQLite file "
        "(requests/seen.py), preflight reads the sizes in one pass (preflight/large.py). Landing's peak is flat. "
        f"Below {PER_BATCH:,} requests the input is one batch, held in memory as sent.",
        "",
    ]
    return lines


if __name__ == "__main__":
    chosen = tuple(int(n) for n in sys.argv[1].split(",")) if len(sys.argv) > 1 else SIZES
    print("\n".join(section(measure(chosen))))
