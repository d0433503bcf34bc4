"""Shared fixtures: an isolated Airflow home, one emulator per session (reset per test), metrics."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# Airflow reads its home and config at import time: isolate it before anything imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="claude-batch-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_AIRFLOW_HOME / "dags")
os.environ.pop("ANTHROPIC_API_KEY", None)
os.environ.pop("ANTHROPIC_BASE_URL", None)

from airflow_provider_claude_batch.emulator import EmulatorConfig, EmulatorControl, EmulatorServer  # noqa: E402

if TYPE_CHECKING:
    from tests.helpers import EmulatorProcess

_METRICS: list[tuple[str, str]] = []


@pytest.fixture
def record_metric() -> object:
    """Tests report measured figures here; they are printed at the end of the run, not asserted on time."""

    def record(name: str, value: str) -> None:
        _METRICS.append((name, value))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _METRICS:
        terminalreporter.section("measured figures")
        for name, value in _METRICS:
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig()) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session's emulator, with no batches, rules or faults, and default settings."""
    control = emulator_server.control
    control.reset()
    defaults = EmulatorConfig()
    control.configure(**{k: v for k, v in vars(defaults).items()})
    yield emulator_server
    control.clear_faults()


@pytest.fixture(scope="module")
def emulator_process() -> Iterator[EmulatorProcess]:
    """The emulator CLI in a process of its own, for tests that read its memory from /proc."""
    from tests.helpers import EmulatorProcess

    emulator = EmulatorProcess()
    yield emulator
    emulator.process.terminate()
    emulator.process.wait(timeout=30)


@pytest.fixture
def control(emulator: EmulatorServer) -> EmulatorControl:
    return emulator.control


@pytest.fixture
def claude_conn(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `claude_batch_default` connection (from the environment) pointing at the emulator."""
    import json

    conn = {
        "conn_type": "claude_batch",
        "host": emulator.url,
        "password": emulator.api_key,
        "extra": {"timeout": 10, "max_retries": 2},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT", json.dumps(conn))
    return "claude_batch_default"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata DB in the session's Airflow home, and its dags folder."""
    import subprocess
    import sys

    dags = _AIRFLOW_HOME / "dags"
    dags.mkdir(exist_ok=True)
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(dags)},
    )
    return dags


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto in server mode) on 127.0.0.1, for the whole session."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, and an `aws_default` connection (the one ObjectStoragePath uses) pointing at it."""
    import json
    import secrets

    import boto3

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
            }
        ),
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    bucket = "claude-batch-" + secrets.token_hex(4)
    boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return bucket
