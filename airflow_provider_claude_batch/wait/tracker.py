"""The wait loop's decisions, shared by the async trigger and the in-task (sync) waiter.

A loop asks `before_poll`, polls the pending batches, then reports `after_success` or
`after_error`; each answer says whether to sleep (and how long) or to finish with an outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from airflow_provider_claude_batch.wait.events import BatchSnapshot, ErrorKind, WaitOutcome, WaitStatus
from airflow_provider_claude_batch.wait.polling import ErrorBudget, classify_status, next_poll_delay, progress_line

if TYPE_CHECKING:
    import random


@dataclass(frozen=True)
class Decision:
    action: Literal["sleep", "finish"]
    delay: float = 0.0
    outcome: WaitOutcome | None = None


@dataclass
class WaitTracker:
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
        return self._budget.failures

    def pending(self) -> list[str]:
        return [b for b in self.batch_ids if b not in self.latest or self.latest[b].processing_status != "ended"]

    def _finish(self, status: WaitStatus, message: str, error_kind: ErrorKind | None = None) -> Decision:
        outcome = WaitOutcome(status, list(self.batch_ids), dict(self.latest), message, error_kind)
        return Decision("finish", outcome=outcome)

    def _sleep(self, delay: float, now: float) -> Decision:
        return Decision("sleep", delay=max(0.0, min(delay, self.deadline - now)))

    def before_poll(self, now: float) -> Decision | None:
        if now >= self.deadline:
            return self._finish("timeout", "The wait deadline passed before every batch ended.")
        return None

    def after_success(self, snapshots: list[BatchSnapshot], now: float) -> Decision:
        self._budget.record_success()
        latest = self.latest
        self.changed = False
        for shot in snapshots:
            if latest.get(shot.id) != shot:
                self.changed = True
            latest[shot.id] = shot
        if not self.pending():
            return self._finish("ended", "Every batch has ended.")
        return self._sleep(
            next_poll_delay(self.poll_interval, self.max_poll_interval, now - self.started_at, self.rng), now
        )

    def after_error(self, status_code: int | None, retry_after: float | None, described: str, now: float) -> Decision:
        """Fatal errors end the wait; transient ones are ridden out until the budget is spent."""
        if classify_status(status_code) == "fatal":
            return self._finish("error", f"The API refused to report on the batches: {described}", "refused")
        self._budget.record_failure(now)
        if self._budget.exhausted(now):
            return self._finish(
                "error",
                (
                    f"The API kept failing for {self.error_budget / 60:.0f} min (last: {described}); the "
                    "batches were left running and a retry of the task re-attaches to them."
                ),
                "unavailable",
            )
        return self._sleep(self._budget.retry_delay(retry_after, self.poll_interval, self.rng), now)

    def progress_due(self, now: float, every: float) -> bool:
        """Whether to log progress now: when a poll told something new, else once every `every` seconds."""
        if self.changed or self._reported_at is None or now - self._reported_at >= every:
            self._reported_at = now
            return True
        return False

    def progress(self, now: float) -> str:
        return progress_line(
            {b: s.processing_status for b, s in self.latest.items()},
            {b: s.request_counts for b, s in self.latest.items()},
            now - self.started_at,
        )
