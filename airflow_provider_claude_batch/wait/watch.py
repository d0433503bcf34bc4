"""One trigger's wait as its connection's shared poll cycles drive it (see `wait.poller`).

The poller hands each cycle's answer to the trigger's own `WaitTracker` and wakes the trigger's task
only when there is a line to log or the wait is over. A trigger woken every cycle would allocate a
sleep, a request and an answer each time, all living until the next cycle: with 10,000 triggers in
one triggerer, tens of thousands of objects a cycle moved to the oldest generation of the garbage
collector, and a full collection of the whole triggerer process (hundreds of ms without a turn of
its event loop) every few cycles.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.hooks.api_errors import retry_after
from airflow_provider_claude_batch.wait.listing import coalesce_patience, early_allowance

if TYPE_CHECKING:
    from airflow_provider_claude_batch.wait.events import BatchSnapshot, WaitOutcome
    from airflow_provider_claude_batch.wait.tracker import Decision, WaitTracker

# A progress line when a poll tells something new, else one every 10 minutes: a day-long wait polled
# every 30 s would otherwise write thousands of identical lines (and 1,000 waiting triggers spend
# more CPU writing them than polling).
PROGRESS_EVERY = 600.0

LogLine = tuple[int, str]  # (logging level, text) for the trigger to log in its own task


@dataclass(eq=False)
class Watch:
    """A trigger's tracker, when its next poll is due, and what the trigger must log or return."""

    tracker: WaitTracker
    due: float  # loop time when the next poll is due
    deadline: float  # loop time when the tracker's wall-clock deadline passes
    patience: float  # how long the next poll may wait for other triggers' polls to join a cycle
    progress: bool  # whether the trigger logs progress lines (its logger writes INFO)
    early: float = 0.0  # how long before `due` the next poll may join a cycle that others start
    lines: list[LogLine] = field(default_factory=list)
    outcome: WaitOutcome | None = None
    failure: BaseException | None = None
    _woken: asyncio.Future[None] | None = None

    @property
    def over(self) -> bool:
        """Whether the wait has ended (an outcome, or an error that ends the trigger)."""
        return self.outcome is not None or self.failure is not None

    def start_by(self, alone: bool) -> float:
        """When a cycle should have started for this watch: its poll may wait for others, never past the deadline."""
        return min(self.due + (0.0 if alone else self.patience), self.deadline)

    def joins(self, cycle_start: float) -> bool:
        """Whether the next poll joins a cycle starting now: due, or due soon enough to poll early."""
        return not self.over and min(self.due - self.early, self.deadline) <= cycle_start

    async def news(self) -> list[LogLine]:
        """Sleep until there are lines to log or the wait is over; the lines. Raises what ended the trigger."""
        while not (self.lines or self.over):
            self._woken = asyncio.get_running_loop().create_future()
            try:
                await self._woken
            finally:
                self._woken = None
        if self.failure is not None:
            raise self.failure
        lines, self.lines = self.lines, []
        return lines

    def before_poll(self, now: float) -> bool:
        """Whether the batches are still worth polling (False once the deadline has passed: the wait is over)."""
        decision = self.tracker.before_poll(now)
        if decision is None:
            return True
        self._then(decision, 0.0, early=False)
        return False

    def after_answer(self, snapshots: list[BatchSnapshot], read_at: float, now: float) -> bool:
        """Take a cycle's snapshots (read at loop time `read_at`); True if the trigger was woken."""
        tracker = self.tracker
        decision = tracker.after_success(snapshots, now)
        if self.progress and tracker.progress_due(now, PROGRESS_EVERY):
            self.lines.append((logging.INFO, tracker.progress(now)))
        # The next poll is due `delay` after the cycle read the batches, so that the triggers of one
        # cycle stay in step (their delays spread over a tenth: see coalesce_patience); it may join a
        # cycle that others start before then (see early_allowance).
        return self._then(decision, read_at, early=True)

    def after_error(self, exc: BaseException, described: str, now: float, loop_now: float) -> bool:
        """Take the API error the batches met; True if the trigger was woken (it always logs the retry)."""
        tracker = self.tracker
        decision = tracker.after_error(getattr(exc, "status_code", None), retry_after(exc), described, now)
        if decision.action == "sleep":
            self.lines.append(
                (
                    logging.WARNING,
                    f"Polling failed ({described}), attempt {tracker.failures}; retrying in "
                    f"{decision.delay:.1f} s. The batches keep running.",
                )
            )
        return self._then(decision, loop_now, early=False)  # a retry waits `delay` from now (retry-after)

    def fail(self, exc: BaseException) -> bool:
        """End the trigger with an error that is not the API's (it raises in the trigger's task)."""
        self.failure = exc
        return self._wake()

    def _then(self, decision: Decision, start: float, *, early: bool) -> bool:
        if decision.outcome is not None:
            self.outcome = decision.outcome
        else:
            self.due = start + decision.delay
            self.patience = coalesce_patience(decision.delay)
            self.early = early_allowance(decision.delay) if early else 0.0
        return self._wake() if self.lines or self.over else False

    def _wake(self) -> bool:
        woken = self._woken
        if woken is not None and not woken.done():
            woken.set_result(None)
        return True
