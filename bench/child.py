"""A benchmark step in a process of its own (its peak RSS its own): run it, read the JSON line it ends with."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_child(
    args: list[str], *, env: dict[str, str], timeout: float, what: str, stdin: str | None = None
) -> dict[str, Any]:
    """`python <args>`'s last stdout line as JSON; its stderr's end in the error when it fails."""
    done = subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
