"""The wait's decisions, shared by the triggers (async) and the in-worker loop (sync).

A loop asks `before_poll`, polls the pending batches, then reports `after_success` or
`after_error`; each answer says whether to sleep (and how long) or to finish with an outcome.
Pure: the loop hands in the clock and what the API said, and does the sleeping and the polling.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from airflow_provider_claude_batch.defaults import BATCH_LIFETIME, DEADLINE_MARGIN
from airflow_provider_claude_batch.wait.errors import ErrorBudget, decide_after_error
from airflow_provider_claude_batch.wait.events import BatchSnapshot, ErrorKind, WaitOutcome, WaitStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


def next_poll_delay(
    poll_interval: float, max_interval: float, waited_seconds: float, rng: random.Random | None = None
) -> float:
    """Start at `poll_interval`; once a batch has run for an hour, stretch towards `max_interval`.

    Up to 10% jitter so that many waiting triggers do not poll in lockstep.
    """
    base = poll_interval
    if waited_seconds > 3600:
        base = min(max(poll_interval, max_interval), poll_interval * (1 + (waited_seconds - 3600) / 1800))
    jitter = (rng or random).uniform(0.9, 1.0)
    return max(0.0, base * jitter)


def wait_deadline(created_at: Iterable[float | None], now: float, timeout: float | None = None) -> float:
    """When waiting is pointless: 24 h after the newest creation (or `now`, if none is known), plus a
    margin; sooner if the user set a `timeout` (seconds from `now`).
    """
    known = [c for c in created_at if c is not None]
    deadline = (max(known) if known else now) + BATCH_LIFETIME + DEADLINE_MARGIN
    return deadline if timeout is None else min(deadline, now + timeout)


def progress_line(statuses: Mapping[str, str], counts: Mapping[str, Mapping[str, int]], elapsed: float) -> str:
    """One INFO line per poll: batches per state, requests per result type, percent ended, elapsed."""
    per_state: dict[str, int] = {}
    for status in statuses.values():
        per_state[status] = per_state.get(status, 0) + 1
    totals: dict[str, int] = {}
    for batch_counts in counts.values():
        for kind, number in batch_counts.items():
            totals[kind] = totals.get(kind, 0) + number
    requests = sum(totals.values())
    done = requests - totals.get("processing", 0)
    percent = 100.0 * done / requests if requests else 0.0
    states = ", ".join(f"{n} {s}" for s, n in sorted(per_state.items()))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(totals.items()) if n)
    return (
        f"{len(statuses)} batch(es): {states}; {requests} requests ({kinds}); "
        f"{percent:.0f}% done; waiting {elapsed / 60:.1f} min"
    )


@dataclass(frozen=True)
class Decision:
    """What the loop does next: sleep `delay` seconds and poll again, or finish with `outcome`."""

    action: Literal["sleep", "finish"]
    delay: float = 0.0
    outcome: WaitOutcome | None = None


@dataclass
class WaitTracker:
    """One wait on a set of batches: what has been seen of them, and what to do after each poll."""

    batch_ids: list[str]
    deadline: float
    poll_interval: float
    max_poll_interval: float
    error_budget: float
    started_at: float
    latest: dict[str, BatchSnapshot] = field(default_factory=dict)
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        self._budget = ErrorBudget(self.error_budget)
        self.changed = False  # whether the last successful poll told anything new
        self._reported_at: float | None = None

    @property
    def failures(self) -> int:
        """Consecutive failed polls so far (for the log line of a retry)."""
        return self._budget.failures

    def pending(self) -> list[str]:
        """The batches still worth polling: not seen yet, or not ended when last seen."""
        return [b for b in self.batch_ids if b not in self.latest or self.latest[b].processing_status != "ended"]

    def _finish(self, status: WaitStatus, message: str, error_kind: ErrorKind | None = None) -> Decision:
        outcome = WaitOutcome(status, list(self.batch_ids), dict(self.latest), message, error_kind)
        return Decision("finish", outcome=outcome)

    def _sleep(self, delay: float, now: float) -> Decision:
        return Decision("sleep", delay=max(0.0, min(delay, self.deadline - now)))

    def before_poll(self, now: float) -> Decision | None:
        """A timeout once the deadline has passed; else None: go ahead and poll."""
        if now >= self.deadline:
            return self._finish("timeout", "The wait deadline passed before every batch ended.")
        return None

    def after_success(self, snapshots: list[BatchSnapshot], now: float) -> Decision:
        """Take a poll's snapshots: finish once every batch has ended, else sleep until the next poll."""
        self._budget.record_success()
        latest = self.latest
        self.changed = False
        for shot in snapshots:
            last = latest.get(shot.id)
            if last is not shot and last != shot:  # the poller hands an unchanged batch's snapshot again
                self.changed = True
                latest[shot.id] = shot
        if not self.pending():
            return self._finish("ended", "Every batch has ended.")
        return self._sleep(
            next_poll_delay(self.poll_interval, self.max_poll_interval, now - self.started_at, self.rng), now
        )

    def after_error(self, status_code: int | None, retry_after: float | None, described: str, now: float) -> Decision:
        """Fatal errors end the wait; transient ones are ridden out until the budget is spent."""
        decision = decide_after_error(self._budget, status_code, retry_after, self.poll_interval, now, self.rng)
        if decision.kind == "refused":
            return self._finish("error", f"The API refused to report on the batches: {described}", "refused")
        if decision.kind == "unavailable":
            return self._finish(
                "error",
                (
                    f"The API kept failing for {self.error_budget / 60:.0f} min (last: {described}); the "
                    "batches were left running and a retry of the task re-attaches to them."
                ),
                "unavailable",
            )
        return self._sleep(decision.delay, now)

    def progress_due(self, now: float, every: float) -> bool:
        """Whether to log progress now: when a poll told something new, else once every `every` seconds."""
        if self.changed or self._reported_at is None or now - self._reported_at >= every:
            self._reported_at = now
            return True
        return False

    def progress(self, now: float) -> str:
        """The progress line for what has been seen so far."""
        return progress_line(
            {b: s.processing_status for b, s in self.latest.items()},
            {b: s.request_counts for b, s in self.latest.items()},
            now - self.started_at,
        )
