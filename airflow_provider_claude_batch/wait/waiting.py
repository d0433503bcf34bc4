"""The wait step: until every batch has ended, deferred to the triggerer or polled in the worker.

`Waiting` holds the wait's settings and does its I/O through a hook; the submit operator, the
sensor, the results operator (follow-up rounds) and the one-task operator all wait through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NoReturn, Protocol

from airflow_provider_claude_batch.defaults import (
    BATCH_LIFETIME,
    DEADLINE_MARGIN,
    DEFAULT_CONN_ID,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import timedelta

    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger
    from airflow_provider_claude_batch.wait.events import WaitOutcome
    from airflow_provider_claude_batch.wait.tracker import WaitTracker

WaitChoice = Literal["ended", "defer", "in_task"]


class Deferrable(Protocol):
    """What a step needs of its task to hand a wait to the triggerer (any operator has it)."""

    def defer(
        self,
        *,
        trigger: BaseTrigger,
        method_name: str,
        kwargs: dict[str, object] | None = None,
        timeout: timedelta | int | float | None = None,
    ) -> NoReturn:
        """Suspend the task until `trigger` fires, then call `method_name`."""
        ...


@dataclass(frozen=True)
class WaitPolicy:
    """Rarely changed wait knobs.

    :param max_poll_interval: the longest pause between polls (seconds) once batches stay quiet;
        lower it for quicker news at the cost of more List/Retrieve calls against the rate limit.
    :param error_budget: how long (seconds) a run of transient API errors (429, 5xx, network) is
        ridden out before the wait fails; the batches keep running (and costing) meanwhile.
    :param timeout: give up waiting after this long (the default is the batch's 24 h lifetime
        plus an hour); with ``cancel_on_kill`` the unfinished batches are canceled then.
    """

    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL
    error_budget: float = DEFAULT_ERROR_BUDGET
    timeout: timedelta | None = None

    def __post_init__(self) -> None:
        if self.max_poll_interval <= 0:
            raise ValueError(f"max_poll_interval must be > 0 seconds, not {self.max_poll_interval}")
        if self.error_budget < 0:
            raise ValueError(f"error_budget must be >= 0 seconds, not {self.error_budget}; 0 fails on the first error")
        if self.timeout is not None and self.timeout.total_seconds() <= 0:
            raise ValueError(f"timeout must be positive, not {self.timeout}; leave it None to wait the batch lifetime")


@dataclass(frozen=True)
class Waiting:
    """The wait step: its settings, the deferral vs in-task choice, the outcome, user-intent cancels."""

    conn_id: str = DEFAULT_CONN_ID
    deferrable: bool = False
    poll_interval: float = DEFAULT_POLL_INTERVAL
    cancel_on_kill: bool = False
    policy: WaitPolicy = field(default_factory=WaitPolicy)

    def __post_init__(self) -> None:
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, not {self.poll_interval}")

    def deadline(self, created_at: Iterable[float | None], now: float | None = None) -> float:
        """The wall-clock end of the wait: the newest batch's lifetime plus a margin, or the policy's timeout."""
        now = time.time() if now is None else now
        known = [c for c in created_at if c is not None]
        deadline = (max(known) if known else now) + BATCH_LIFETIME + DEADLINE_MARGIN
        if self.policy.timeout is not None:
            deadline = min(deadline, now + self.policy.timeout.total_seconds())
        return deadline

    def trigger(self, batch_ids: Sequence[str], deadline: float) -> ClaudeBatchTrigger:
        """The trigger that waits for `batch_ids` in the triggerer (its kwargs are the serialized contract)."""
        from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger

        return ClaudeBatchTrigger(
            batch_ids,
            self.conn_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
            max_poll_interval=self.policy.max_poll_interval,
            error_budget=self.policy.error_budget,
            cancel_on_kill=self.cancel_on_kill,
        )

    def tracker(self, batch_ids: Sequence[str], deadline: float) -> WaitTracker:
        """The same decisions the trigger follows, for a wait inside the worker."""
        return self.trigger(batch_ids, deadline).tracker()

    def choose(self, hook: ClaudeBatchHook, batch_ids: Sequence[str]) -> WaitChoice:
        """Ended already (one Retrieve each), else defer when deferrable, else wait in the task."""
        if all(hook.retrieve_batch(b).processing_status == "ended" for b in batch_ids):
            return "ended"
        return "defer" if self.deferrable else "in_task"

    def wait(
        self,
        task: Deferrable,
        hook: ClaudeBatchHook,
        batch_ids: Sequence[str],
        created_at: Iterable[float | None],
        *,
        resume_with: str,
        land_canceled: bool = False,
        look_first: bool = True,
        until: float | None = None,
    ) -> list[str]:
        """Return the batch IDs once all ended; defers (resuming `resume_with`) when deferrable.

        A batch canceled outside Airflow fails the wait, unless `land_canceled` (its rows are then landed).
        `look_first=False` skips the one Retrieve per batch that spares a trip through the triggerer
        (batches just created have not ended). `until` (epoch, the deadline guard's switch time) ends
        the wait early without an error: the caller looks at the clock and the batches again.
        """
        choice = self.choose(hook, batch_ids) if look_first else ("defer" if self.deferrable else "in_task")
        if choice == "ended":
            return list(batch_ids)
        deadline = self.deadline(created_at)
        if until is not None:
            deadline = min(deadline, until)
        if choice == "defer":
            task.defer(trigger=self.trigger(batch_ids, deadline), method_name=resume_with)
        from airflow_provider_claude_batch.wait.loop import wait_in_task

        outcome = wait_in_task(hook, self.tracker(batch_ids, deadline))
        if until is not None and outcome.status == "timeout" and deadline == until:
            return outcome.batch_ids
        if land_canceled:
            self.raise_for_unended(hook, outcome)
        else:
            self.finish(hook, outcome.to_payload())
        return outcome.batch_ids

    @staticmethod
    def parse_event(event: object) -> WaitOutcome:
        """The trigger's event, validated: a missing or odd one is an error, never a success."""
        from airflow_provider_claude_batch.exceptions import BatchApiError
        from airflow_provider_claude_batch.wait.events import WaitOutcome

        try:
            return WaitOutcome.from_payload(event)
        except ValueError as exc:
            raise BatchApiError(f"Waiting ended without a usable answer ({exc}); a retry re-attaches.") from exc

    def raise_for_unended(self, hook: ClaudeBatchHook, outcome: WaitOutcome) -> None:
        """A wait that did not see every batch end raises; past the deadline it cancels if asked to."""
        from airflow_provider_claude_batch.wait.loop import raise_unless_ended_cleanly

        if outcome.status == "ended":
            return
        if outcome.status == "timeout" and self.cancel_on_kill:
            self.cancel_unfinished(hook, outcome.batch_ids, reason="the wait deadline passed")
        raise_unless_ended_cleanly(outcome)

    def finish(self, hook: ClaudeBatchHook, event: object) -> list[str]:
        """The resumed wait's batch IDs; success only when every batch ended without a cancel."""
        from airflow_provider_claude_batch.wait.loop import raise_unless_ended_cleanly

        outcome = self.parse_event(event)
        self.raise_for_unended(hook, outcome)
        raise_unless_ended_cleanly(outcome)
        return outcome.batch_ids

    def cancel_unfinished(self, hook: ClaudeBatchHook, batch_ids: Sequence[str], *, reason: str) -> None:
        """Cancel the batches still in progress; a failure to cancel is logged, never raised."""
        for batch_id in batch_ids:
            try:
                batch = hook.retrieve_batch(batch_id)
                if batch.processing_status == "in_progress":
                    hook.cancel_batch(batch_id)
                    hook.log.warning("Canceled batch %s because %s (cancel_on_kill=True)", batch_id, reason)
            except Exception as exc:
                hook.log.warning("Could not cancel batch %s: %s", batch_id, hook.describe_error(exc))

    def cancel_if_user_failed_the_task(
        self, hook: ClaudeBatchHook, batch_ids: Sequence[str], context: Context | None
    ) -> bool:
        """on_kill runs on any SIGTERM (a clear, mark success, a worker shutdown): only "marked failed"
        is a request to stop spending. Returns whether it canceled.
        """
        if not self.cancel_on_kill or not batch_ids or context is None:
            return False
        from airflow_provider_claude_batch._compat import current_task_state

        try:
            state = current_task_state(context["ti"])
        except Exception:
            return False
        if state != "failed":
            return False
        self.cancel_unfinished(hook, batch_ids, reason="the task was marked failed")
        return True
