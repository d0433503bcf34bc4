"""What a failed API call means while waiting: the one error-to-decision rule.

Pure: the wait tracker (trigger and in-worker loop alike) and the queue trigger hand it the status
code, the server's retry-after and the clock, and act on the `ErrorDecision` it returns.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from airflow_provider_claude_batch.defaults import DEFAULT_ERROR_BUDGET

if TYPE_CHECKING:
    from airflow_provider_claude_batch.wait.events import ErrorKind

# Errors that waiting will not heal (bad request, key, billing, permission, not found, proxy
# credentials, too large, unprocessable): a wait or a queue check that meets one stops at once.
FATAL_STATUSES = frozenset({400, 401, 402, 403, 404, 407, 413, 422})
# Refusals that name the caller or the batch as the problem (key, workspace, batch ID, proxy
# credentials): the task fails without retries, whatever it was doing (waiting, landing, resubmitting).
REFUSED_STATUSES = frozenset({401, 403, 404, 407})

StatusClass = Literal["transient", "fatal"]


def classify_status(status_code: int | None) -> StatusClass:
    """Whether waiting may heal an error; `None` stands for a network error or timeout (transient)."""
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
        """Count one more failure of the current run (the first one starts the clock)."""
        if self.first_failure_at is None:
            self.first_failure_at = now
        self.failures += 1

    def record_success(self) -> None:
        """A call went through: the next failure starts a fresh run with the whole budget."""
        self.first_failure_at = None
        self.failures = 0

    def exhausted(self, now: float) -> bool:
        """Whether the current run of failures has lasted the whole budget."""
        return self.first_failure_at is not None and now - self.first_failure_at >= self.budget_seconds

    def retry_delay(self, retry_after: float | None, poll_interval: float, rng: random.Random | None = None) -> float:
        """Honour the server's retry-after; else back off exponentially from 2 s up to the poll interval x 4."""
        if retry_after is not None and retry_after > 0:
            return float(retry_after)
        ceiling = max(poll_interval * 4, 10.0)
        backoff = min(ceiling, 2.0 * 2.0 ** max(0, self.failures - 1))
        return float(backoff * (rng or random).uniform(0.75, 1.0))


@dataclass(frozen=True)
class ErrorDecision:
    """After a failed call: try again after `delay` seconds, or stop, the wait ending with `kind`."""

    action: Literal["retry", "stop"]
    delay: float = 0.0
    kind: ErrorKind | None = None


def decide_after_error(
    budget: ErrorBudget,
    status_code: int | None,
    retry_after: float | None,
    poll_interval: float,
    now: float,
    rng: random.Random | None = None,
) -> ErrorDecision:
    """A refusal ends the wait at once; other errors are ridden out for the budget (backing off, or
    after the server's retry-after), then the wait ends "unavailable" instead of looping forever.
    """
    if classify_status(status_code) == "fatal":
        return ErrorDecision("stop", kind="refused")
    budget.record_failure(now)
    if budget.exhausted(now):
        return ErrorDecision("stop", kind="unavailable")
    return ErrorDecision("retry", delay=budget.retry_delay(retry_after, poll_interval, rng))
