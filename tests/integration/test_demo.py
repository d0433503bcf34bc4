"""The README's main command (`scripts/demo` runs `scripts/run_demo.py`): on the emulator by default,
and on "the real API" when ANTHROPIC_API_KEY is set, here played by an emulator at ANTHROPIC_BASE_URL
so the key path is exercised without a bill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorServer

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _demo(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ANTHROPIC_", "CLAUDE_BATCH_EXAMPLES_"))
    }
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_demo.py")],
        capture_output=True,
        text=True,
        env={**clean, "CLAUDE_BATCH_DEMO_HOME": str(home), **env},
        timeout=600,
    )


def test_without_a_key_the_demo_runs_the_nightly_example_on_the_emulator_and_reports_cost(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    assert "No ANTHROPIC_API_KEY: using the local emulator" in out
    assert ": success" in out
    assert "Requests: 60 (60 succeeded" in out
    assert "at batch price vs $" in out and "at standard price" in out
    assert "Emulator: 1 batch(es) created; nothing was billed." in out
    folders = list((tmp_path / "output" / "nightly_classification").iterdir())
    assert len(folders) == 1 and (folders[0] / "_manifest.json").exists()


def test_with_a_key_the_demo_says_what_it_will_spend_before_submitting_to_the_api(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    demo = _demo(
        tmp_path,
        ANTHROPIC_API_KEY=emulator.api_key,
        ANTHROPIC_BASE_URL=emulator.url,
        CLAUDE_BATCH_EXAMPLES_POLL_SECONDS="1",
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    out = demo.stdout
    announcement = out.index("ANTHROPIC_API_KEY is set: this run submits 60 short reviews")
    assert announcement < out.index("DAG run ")
    assert "local emulator" not in out
    assert "Requests: 60 (60 succeeded" in out
    batches = emulator.control.state(custom_ids=False)["batches"]
    assert [batch["request_count"] for batch in batches] == [60]
    assert emulator.api_key not in out + demo.stderr
