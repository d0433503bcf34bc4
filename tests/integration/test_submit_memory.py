"""Issue 18, point 1: submitting a large JSONL input holds under two batch bodies, whatever its size.

The probe (tests/submit_probe.py) runs the submit steps in a process of its own and reads its peak RSS;
the emulator runs in another process, so neither's memory is the other's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import EmulatorProcess

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]

REPO = Path(__file__).resolve().parents[2]
PER_BATCH = 20_000
PADDING = "x" * 960  # each request about 1.1 KB (the 1,000,000 requests in 1.1 GB): 20,000 make 22 MB
# What stays in memory per request is nothing: offsets, custom_ids and preflight facts spill with the items
# (requests/columns.py), the duplicate check moves to disk (requests/seen.py), preflight reads the sizes in
# one pass (preflight/large.py). From 100,000 to 200,000 requests the peak may move by this much, no more.
GROWTH_ALLOWANCE = 3 * 2**20


def _write_input(path: Path, count: int) -> None:
    with path.open("w") as file:
        for i in range(count):
            params = {
                "model": "claude-sonnet-4-6",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"{PADDING} {i}"}],
            }
            file.write(json.dumps({"custom_id": f"r-{i}", "params": params}) + "\n")


def _probe(emulator: EmulatorProcess, jsonl: Path) -> dict[str, Any]:
    conn = {"conn_type": "claude_batch", "host": emulator.url, "password": "emulator-key", "extra": {"timeout": 300}}
    env = {**os.environ, "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(conn)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.submit_probe", str(jsonl), str(PER_BATCH)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_large_input_is_submitted_holding_about_one_batch_not_the_input(
    emulator_process: EmulatorProcess, tmp_path: Path, record_metric: Callable[[str, str], None]
) -> None:
    runs = {}
    for count in (100_000, 200_000):
        jsonl = tmp_path / f"{count}.jsonl"
        _write_input(jsonl, count)
        runs[count] = _probe(emulator_process, jsonl)
        runs[count]["input_bytes"] = jsonl.stat().st_size
        jsonl.unlink()
    for count, run in runs.items():
        assert run["requests"] == count and run["batches"] == count // PER_BATCH and run["spilled"]
        assert int(run["peak_growth"]) < 2 * int(run["largest_body"]), (count, run)  # the bound
    growth = int(runs[200_000]["peak_growth"]) - int(runs[100_000]["peak_growth"])
    assert growth < GROWTH_ALLOWANCE, runs  # flat: nothing is kept per request
    created = emulator_process.control.state(custom_ids=False)
    assert created["batches_created"] == 15
    for count, run in runs.items():
        record_metric(
            f"submit {count:,} requests ({int(run['input_bytes']) / 1e6:.0f} MB JSONL), {PER_BATCH:,} per batch",
            f"peak RSS growth {int(run['peak_growth']) / 1e6:.1f} MB "
            f"(after preparing {int(run['peak_growth_prepared']) / 1e6:.1f} MB; one batch body "
            f"{int(run['largest_body']) / 1e6:.1f} MB), {float(run['seconds']):.1f} s",
        )
