"""The emulator is an extra: without starlette and uvicorn it says how to install it; the rest still imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK = "import sys\nfor name in ('starlette', 'uvicorn'):\n    sys.modules[name] = None\n"


def run(code: str, *, block: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = BLOCK if block else "import sys\n"
    return subprocess.run([sys.executable, "-c", prefix + code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "module", ["airflow_provider_claude_batch.emulator", "airflow_provider_claude_batch.emulator.app"]
)
def test_importing_the_emulator_without_its_extra_names_the_install_command(module: str) -> None:
    done = run(f"import {module}")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: The Claude Batches emulator needs starlette"), done.stderr
    assert "pip install 'airflow-provider-claude-batch[emulator]'" in last


def test_the_provider_modules_do_not_import_the_emulator() -> None:
    # Not run with starlette blocked: Airflow 3.0 itself imports FastAPI (so starlette) at start-up.
    # That no module outside emulator/ imports starlette or uvicorn is test_declared_dependencies' job.
    done = run(
        "import airflow_provider_claude_batch.operators.claude_batch, airflow_provider_claude_batch.sensors.claude_batch\n"
        "import airflow_provider_claude_batch.hooks.claude_batch, airflow_provider_claude_batch.triggers.claude_batch\n"
        "import airflow_provider_claude_batch.decorators.claude_batch\n"
        "assert 'airflow_provider_claude_batch.emulator' not in sys.modules, 'the emulator was imported'\n"
        "assert 'uvicorn' not in sys.modules, 'uvicorn was imported'\n",
        block=False,
    )
    assert done.returncode == 0, done.stderr
