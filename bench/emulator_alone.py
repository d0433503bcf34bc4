"""Figure 5, the emulator alone: the floor under every other figure.

A raw POST of a pre-serialized 100,000-request body, and a plain streamed copy of its 100,000 result
lines to a file, over loopback to the emulator in its own process. Any client's submit or land time
is at least this.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import httpx2
import msgspec

HEADERS = {"x-api-key": "emulator-key", "anthropic-version": "2023-06-01", "content-type": "application/json"}


@dataclass
class EmulatorFloor:
    body_mb: float
    create_seconds: list[float]
    results_mb: float
    copy_seconds: list[float]


def body(count: int = 100_000) -> bytes:
    padding = "x" * 1000
    return msgspec.json.encode(
        {
            "requests": [
                {
                    "custom_id": f"r-{i}",
                    "params": {
                        "model": "claude-sonnet-5-5",
                        "max_tokens": 64,
                        "messages": [{"role": "user", "content": f"{padding} {i}"}],
                    },
                }
                for i in range(count)
            ]
        }
    )


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_claude_batch.emulator",
            "--port",
            str(port),
            "--processing-seconds",
            "0",
            "--log-level",
            "warning",
        ],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx2.get(url + "/_emulator/state?custom_ids=false", headers=HEADERS, timeout=1).raise_for_status()
            return process, url
        except httpx2.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("emulator did not start")


def measure(repeat: int) -> EmulatorFloor:
    process, url = start_emulator()
    try:
        payload = body()
        creates, copies = [], []
        size = 0
        with httpx2.Client(timeout=600) as client:
            for _ in range(repeat):
                started = time.perf_counter()
                batch = client.post(url + "/v1/messages/batches", content=payload, headers=HEADERS).json()
                creates.append(time.perf_counter() - started)
                with tempfile.NamedTemporaryFile() as target:
                    started = time.perf_counter()
                    with client.stream(
                        "GET", f"{url}/v1/messages/batches/{batch['id']}/results", headers=HEADERS
                    ) as response:
                        for chunk in response.iter_bytes(1 << 20):
                            target.write(chunk)
                    target.flush()
                    copies.append(time.perf_counter() - started)
                    size = os.path.getsize(target.name)
        return EmulatorFloor(len(payload) / 1e6, creates, size / 1e6, copies)
    finally:
        process.terminate()
        process.wait(timeout=30)


def summary(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f}"
