"""Request builders and an emulator process shared by tests, and the Airflow version they run on."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from airflow import __version__ as _airflow_version

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.results.fold import TableRow, _decode_line, _fold_parsed
from airflow_provider_claude_batch.results.totals import FAILED_TYPES, Totals

# (major, minor) of the installed Airflow: tests of features first shipped after the 3.0 floor skip below them.
AIRFLOW_VERSION = tuple(int(part) for part in _airflow_version.split(".")[:2])


def printed(capfd: Any) -> str:
    """What the run printed (stdout and stderr), runs of spaces and box borders as one space: Airflow 3.0
    prints a task's exception in a box wrapped at 80 columns, 3.1+ as a log line."""
    captured = capfd.readouterr()
    return " ".join(re.split(r"[\s│]+", captured.out + captured.err))


def message_params(text: str = "Hello", **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    }
    params.update(overrides)
    return params


def make_requests(n: int, prefix: str = "req") -> list[dict[str, object]]:
    return [{"custom_id": f"{prefix}-{i}", "params": message_params(f"item {i}")} for i in range(n)]


def die_after_create(monkeypatch: object, on_create: int, why: str) -> list[str]:
    """Make the worker "die" (SystemExit) right after the `on_create`-th create succeeded, before the
    batch ID is recorded. Returns the IDs of every batch created, in order."""
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

    real_create = ClaudeBatchHook.create_batch_streamed
    made: list[str] = []

    def create(self, chunks, size):  # type: ignore[no-untyped-def]
        batch = real_create(self, chunks, size)
        made.append(batch.id)
        if len(made) == on_create:
            raise SystemExit(why)
        return batch

    monkeypatch.setattr(ClaudeBatchHook, "create_batch_streamed", create)  # type: ignore[attr-defined]
    return made


class EmulatorProcess:
    """The emulator CLI in its own process (key `emulator-key`), whose memory a test reads from /proc."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_claude_batch.emulator",
                "--port",
                str(self.port),
                "--processing-seconds",
                "0",
                "--log-level",
                "warning",
            ],
            stderr=subprocess.DEVNULL,
        )
        self.control = EmulatorControl(self.url, "emulator-key")
        for _ in range(300):
            try:
                self.control.state()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("emulator process did not start")

    def _status(self, field: str) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise KeyError(field)

    def resident(self) -> int:
        return self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as refs:
            refs.write("5")


@dataclass
class FoldedLine:
    """One result line folded on its own: its row as a dict of columns, and whether it failed."""

    custom_id: str
    result_type: str
    row: dict[str, Any]
    failed: bool


def fold_line(line: bytes, batch_id: str, totals: Totals) -> FoldedLine:
    """The reference for `fold_lines`: one raw line decoded and folded on its own, counted into `totals`."""
    rows: list[TableRow] = []
    _fold_parsed([_decode_line(line, batch_id)], batch_id, totals, rows, [])
    row = rows[0]
    return FoldedLine(row.custom_id, row.result_type, msgspec.structs.asdict(row), row.result_type in FAILED_TYPES)
