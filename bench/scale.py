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
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SIZES = (10_000, 100_000, 1_000_000)
PER_BATCH = 20_000
PADDING = "x" * 420

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
    with open(jsonl, "rb") as f:
        prepared, problems, bad = prepare_requests(iter_jsonl(f), spill_above_requests=per_batch)
    assert not bad, problems
    plans = plan_batches(prepared, max_requests=per_batch)
    ids = [hook.create_batch_streamed(prepared.iter_body(p.first, p.stop), p.body_bytes).id for p in plans]
    result = {"batch_ids": ids, "body_mb": max(p.body_bytes for p in plans) / 1e6}
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
    }
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, step, str(source), str(PER_BATCH), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{step} failed: {done.stderr[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


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
                jsonl.unlink()
                ids = Path(tmp) / "ids.json"
                ids.write_text(json.dumps(submitted["batch_ids"]))
                landed = _run(url, "land", ids, Path(tmp) / "out")
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
        f"A JSONL file of N requests (about 560 bytes each), submitted in batches of {PER_BATCH:,} (one batch "
        "body about 11 MB) and its N results landed with `LandingPolicy(concurrency=4)`, each step in its own "
        "process against an emulator process per size; one run per size.",
        "",
        "| requests | JSONL MB | submit s | submit s per 100k | submit peak RSS growth MB | "
        "land s | land s per 100k | land peak RSS growth MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for count in sorted(figure.submit_seconds):
        per = 100_000 / count
        lines.append(
            f"| {count:,} | {figure.jsonl_mb[count]:.0f} | {figure.submit_seconds[count]:.2f} | "
            f"{figure.submit_seconds[count] * per:.2f} | {figure.submit_peak_mb[count]:.0f} | "
            f"{figure.land_seconds[count]:.2f} | {figure.land_seconds[count] * per:.2f} | "
            f"{figure.land_peak_mb[count]:.0f} |"
        )
    lines += [
        "",
        "Targets: seconds per 100,000 flat across sizes; submit's peak RSS growth under 2x one batch's body plus "
        "what is kept per request (its custom_id, offsets and preflight facts: about 165 bytes, so about 165 MB "
        "at 1,000,000); landing's flat. Below 20,000 requests the input is one batch, held in memory as sent.",
        "",
    ]
    return lines


if __name__ == "__main__":
    chosen = tuple(int(n) for n in sys.argv[1].split(",")) if len(sys.argv) > 1 else SIZES
    print("\n".join(section(measure(chosen))))
