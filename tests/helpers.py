"""Request builders shared by tests, and the Airflow version they run on."""

from __future__ import annotations

import re
from typing import Any

from airflow import __version__ as _airflow_version

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
