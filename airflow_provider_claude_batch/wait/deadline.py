"""The deadline guard's arithmetic: when to stop waiting for batches and send the rest to the Messages API.

Pure: epoch seconds in, decisions out. The Batches API reports no per-request progress before a batch
ends, so the number of requests that may still be unfinished at any time is bounded by all of them;
the switch time leaves room to send that many through the Messages API, `concurrency` at a time, and
to land the result before the deadline:

    sync_seconds = (ceil(requests / concurrency) + 1) * latency   (+ 1: each cached prefix's first call goes alone)
    switch_at    = deadline - landing - sync_seconds

A deadline before `now + landing + sync_seconds` cannot be met even by the Messages API alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from airflow_provider_claude_batch.defaults import BATCH_LIFETIME


def utc_clock(epoch: float) -> str:
    """An epoch as a short UTC wall-clock time for log lines (``06:12:30 UTC``, with the date if not today)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class SwitchPlan:
    """The arithmetic for one set of batches: how long the Messages API would take, and when to switch."""

    deadline: float
    requests: int
    concurrency: int
    latency: float
    landing: float

    @property
    def waves(self) -> int:
        """Rounds of `concurrency` calls: one more than the requests fill, for the first call of each cached
        prefix, which goes alone (`sync.decide`'s order rule), when there is more than one request.
        """
        return math.ceil(self.requests / self.concurrency) + (self.requests > 1)

    @property
    def sync_seconds(self) -> float:
        """Time to send every request through the Messages API, `concurrency` at a time."""
        return self.waves * self.latency

    @property
    def switch_at(self) -> float:
        """The latest time at which the requests still unfinished (at most all of them) can go to the
        Messages API and still land before the deadline.
        """
        return self.deadline - self.landing - self.sync_seconds

    def arithmetic(self) -> str:
        """The computation as one sentence, for log lines and errors."""
        return (
            f"{self.requests} requests / {self.concurrency} in flight"
            f"{' + 1 for the first call of each cached prefix' if self.requests > 1 else ''} = {self.waves} "
            f"waves x {self.latency:g} s each = "
            f"{self.sync_seconds:g} s through the Messages API, + {self.landing:g} s to land, before the "
            f"deadline {utc_clock(self.deadline)}"
        )

    def meetable(self, now: float) -> bool:
        """Whether sending everything through the Messages API from `now` still lands before the deadline."""
        return self.switch_at >= now

    def switch_due(self, now: float) -> bool:
        """Whether the batches' time is up: what has not ended goes to the Messages API."""
        return now >= self.switch_at

    def guard_note(self, now: float) -> str | None:
        """A line for the log when the deadline is within a batch's 24 h lifetime (the API promises
        nothing before then, so the guard is what makes such a deadline safe); None otherwise.
        """
        if self.deadline - now >= BATCH_LIFETIME:
            return None
        return (
            f"The deadline {utc_clock(self.deadline)} is {(self.deadline - now) / 3600:.1f} h away, under the "
            "Batches API's 24 h promise: the deadline guard (sync_fallback) is what makes it safe."
        )
