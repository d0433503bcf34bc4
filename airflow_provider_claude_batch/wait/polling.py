"""Polling decisions for waiting on batches: when to look again, which errors to ride out, when to give up.

Pure: the trigger (async) and the sensor's poke mode (sync) feed these functions the clock and the
errors they saw, and act on the answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from airflow_provider_claude_batch.defaults import (
    BATCH_LIFETIME,
    DEADLINE_MARGIN,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
)

__all__ = [
    "BATCH_LIFETIME",
    "DEADLINE_MARGIN",
    "DEFAULT_ERROR_BUDGET",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_POLL_INTERVAL",
    "REFUSED_STATUSES",
    "ErrorBudget",
    "QueueCheck",
    "classify_status",
    "default_deadline",
    "next_poll_delay",
    "progress_line",
    "queue_check_after_error",
]

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

FATAL_STATUSES = frozenset({400, 401, 402, 403, 404, 407, 413, 422})
# Refusals that name the caller or the batch as the problem (key, workspace, batch ID, proxy
# credentials): the task fails without retries, whatever it was doing (waiting, landing, resubmitting).
REFUSED_STATUSES = frozenset({401, 403, 404, 407})

ErrorKind = Literal["transient", "fatal"]


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


def classify_status(status_code: int | None) -> ErrorKind:
    """Auth, permission, not found, proxy auth and bad requests will not heal by waiting; everything else may.

    `None` stands for a network error or timeout: transient.
    """
    if status_code is not None and status_code in FATAL_STATUSES:
        return "fatal"
    return "transient"


@dataclass
class ErrorBudget:
    """How long a run of consecutive transient errors may last before waiting is abandoned.

    Abandoning the wait never cancels anything; it fails the task with the batch IDs, and a retry
    re-attaches to the same batches.
    """

    budget_seconds: float = DEFAULT_ERROR_BUDGET
    first_failure_at: float | None = None
    failures: int = 0

    def record_failure(self, now: float) -> None:
        if self.first_failure_at is None:
            self.first_failure_at = now
        self.failures += 1

    def record_success(self) -> None:
        self.first_failure_at = None
        self.failures = 0

    def exhausted(self, now: float) -> bool:
        return self.first_failure_at is not None and now - self.first_failure_at >= self.budget_seconds

    def retry_delay(self, retry_after: float | None, poll_interval: float, rng: random.Random | None = None) -> float:
        """Honour the server's retry-after; else back off exponentially from 2 s up to the poll interval x 4."""
        if retry_after is not None and retry_after > 0:
            return float(retry_after)
        ceiling = max(poll_interval * 4, 10.0)
        backoff = min(ceiling, 2.0 * 2.0 ** max(0, self.failures - 1))
        return float(backoff * (rng or random).uniform(0.75, 1.0))


@dataclass(frozen=True)
class QueueCheck:
    """What the queue guard does after a failed listing: look again after `delay`, or stop with `kind`."""

    action: Literal["retry", "stop"]
    delay: float = 0.0
    kind: Literal["refused", "unavailable"] | None = None


def queue_check_after_error(
    budget: ErrorBudget,
    status_code: int | None,
    retry_after_seconds: float | None,
    poll_interval: float,
    now: float,
    rng: random.Random | None = None,
) -> QueueCheck:
    """The wait trigger's rules for the queue guard: a refusal ends at once, other errors are ridden
    out for the budget (backing off), then the wait ends instead of looping on a broken URL forever.
    """
    if classify_status(status_code) == "fatal":
        return QueueCheck("stop", kind="refused")
    budget.record_failure(now)
    if budget.exhausted(now):
        return QueueCheck("stop", kind="unavailable")
    return QueueCheck("retry", delay=budget.retry_delay(retry_after_seconds, poll_interval, rng))


def default_deadline(created_at_epochs: Iterable[float]) -> float:
    """The wall-clock time after which waiting is pointless: 24 h after the newest creation, plus a margin."""
    return max(created_at_epochs) + BATCH_LIFETIME + DEADLINE_MARGIN


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
