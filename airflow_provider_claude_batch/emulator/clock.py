"""A wall clock that tests can move forward, so 24 h expiry and 29-day archiving take no real time."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class EmulatorClock:
    """Real time plus an offset that only ever grows (batches must never run backwards)."""

    def __init__(self) -> None:
        self._offset = 0.0

    def now(self) -> float:
        """The emulated epoch seconds: real time plus every advance so far."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` (never back) and return the new time."""
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        self._offset += seconds
        return self.now()

    def set(self, epoch_seconds: float) -> float:
        """Jump to an absolute time; a time in the past is refused for the same reason as above."""
        return self.advance(max(0.0, epoch_seconds - self.now()))


def rfc3339(epoch_seconds: float) -> str:
    """The API's timestamp format: UTC with microseconds and a trailing Z."""
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat().replace("+00:00", "Z")
