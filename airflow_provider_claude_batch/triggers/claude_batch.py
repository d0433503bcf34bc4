"""`ClaudeBatchTrigger`: wait in the triggerer, without a worker slot, until every batch has ended.

It serializes only IDs, the conn id, a wall-clock deadline and polling settings (never a key),
polls through the triggerer's shared poller for its connection (one SDK async client, and one List
call for many triggers' batches: see `triggers.poller`) and rides out API outages for a time
budget. It never cancels a batch because of an error of its own: only `on_kill`, when a user marked
the deferred task failed, and only with `cancel_on_kill`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_claude_batch.hooks.api_errors import describe_api_error, mask_secrets, retry_after
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.submit.queue import fits
from airflow_provider_claude_batch.submit.queue_room import queued_requests_async
from airflow_provider_claude_batch.wait.events import WaitOutcome
from airflow_provider_claude_batch.wait.listing import coalesce_patience
from airflow_provider_claude_batch.wait.poller import SharedPoller, shared_poller
from airflow_provider_claude_batch.wait.polling import (
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    ErrorBudget,
    queue_check_after_error,
)
from airflow_provider_claude_batch.wait.tracker import WaitTracker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence


# A progress line when a poll tells something new, else one every 10 minutes: a day-long wait polled
# every 30 s would otherwise write thousands of identical lines (and 1,000 waiting triggers spend
# more CPU writing them than polling).
PROGRESS_EVERY = 600.0


class ClaudeBatchTrigger(BaseTrigger):
    """Poll one or many batches until all have ended, the deadline passes, or the API fails for good."""

    def __init__(
        self,
        batch_ids: Sequence[str],
        conn_id: str = ClaudeBatchHook.default_conn_name,
        *,
        deadline: float,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        error_budget: float = DEFAULT_ERROR_BUDGET,
        cancel_on_kill: bool = False,
        started_at: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.batch_ids = list(batch_ids)
        self.conn_id = conn_id
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.error_budget = float(error_budget)
        self.cancel_on_kill = cancel_on_kill
        self.started_at = time.time() if started_at is None else float(started_at)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "batch_ids": self.batch_ids,
                "conn_id": self.conn_id,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "error_budget": self.error_budget,
                "cancel_on_kill": self.cancel_on_kill,
                "started_at": self.started_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with shared_poller(self.conn_id, self.batch_ids) as poller:
            outcome = await self._wait(poller)
        yield TriggerEvent(outcome.to_payload())

    def tracker(self) -> WaitTracker:
        return WaitTracker(
            self.batch_ids,
            self.deadline,
            self.poll_interval,
            self.max_poll_interval,
            self.error_budget,
            self.started_at,
        )

    async def _wait(self, poller: SharedPoller) -> WaitOutcome:
        tracker = self.tracker()
        try:
            await poller.client()
        except Exception as exc:  # a broken connection definition must end the wait with a reason
            message = mask_secrets(f"Cannot build a client from connection {self.conn_id!r}: {exc}")
            return WaitOutcome("error", self.batch_ids, {}, message, "refused")
        import anthropic  # already loaded by the client build, off the event loop

        loop = asyncio.get_running_loop()
        delay = self.poll_interval
        while True:
            now = time.time()
            read_at: float | None = None
            decision = tracker.before_poll(now)
            if decision is None:
                try:
                    answer = await poller.poll(tracker.pending(), coalesce_patience(delay))
                except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                    described = poller.describe(exc)
                    decision = tracker.after_error(getattr(exc, "status_code", None), retry_after(exc), described, now)
                    if decision.action == "sleep":
                        self.log.warning(
                            "Polling failed (%s), attempt %d; retrying in %.1f s. The batches keep running.",
                            described,
                            tracker.failures,
                            decision.delay,
                        )
                else:
                    read_at = answer.read_at
                    decision = tracker.after_success(answer.snapshots, now)
                    if tracker.progress_due(now, PROGRESS_EVERY) and self.log.isEnabledFor(logging.INFO):
                        self.log.info("%s", tracker.progress(now))
            if decision.outcome is not None:
                return decision.outcome
            delay = decision.delay
            # After a success, the next poll is due `delay` after the cycle read the batches (so the
            # triggers of one cycle stay in step); after an error, `delay` from now (retry-after).
            await asyncio.sleep(delay if read_at is None else max(0.0, delay - (loop.time() - read_at)))

    async def on_kill(self) -> None:
        """Airflow 3.3+ calls this when a user clears, marks failed or marks success the deferred task.

        Only "marked failed" is a request to stop spending: a clear must re-attach (cancelling then
        would make the next try pay again) and "marked success" keeps the work.
        """
        if not self.cancel_on_kill:
            return
        state = await _current_task_state(self)
        if state != "failed":
            self.log.info("Task is now %r, not failed: leaving batches %s running", state, self.batch_ids)
            return
        hook = ClaudeBatchHook(claude_batch_conn_id=self.conn_id)
        try:
            client = await hook.get_async_conn()
            for batch_id in self.batch_ids:
                try:
                    await client.messages.batches.cancel(batch_id)
                    self.log.warning("Task marked failed: canceled batch %s", batch_id)
                except Exception as exc:
                    self.log.warning("Could not cancel batch %s: %s", batch_id, describe_api_error(exc))
        finally:
            await hook.aclose()


async def _current_task_state(trigger: BaseTrigger) -> str | None:
    """The deferred task instance's state now, as the API server sees it (None if unknown)."""
    ti = trigger.task_instance
    if ti is None:
        return None
    try:
        from asgiref.sync import sync_to_async

        from airflow_provider_claude_batch._compat import current_task_state

        return await sync_to_async(current_task_state)(ti)
    except Exception as exc:
        trigger.log.warning("Could not read the task's state (%s); not cancelling anything", exc)
        return None


class ClaudeBatchQueueTrigger(BaseTrigger):
    """Wait until the workspace's queued requests leave room for `needed` more (the queue guard).

    Errors follow the wait trigger's rules: a refusal (401/403/404/407...) ends the wait at once, any
    other error is ridden out for `error_budget` seconds, then the wait ends with an "unavailable"
    event (the operator fails, retryably; nothing was created meanwhile).
    """

    def __init__(
        self,
        needed: int,
        max_queued: int,
        conn_id: str = ClaudeBatchHook.default_conn_name,
        *,
        poll_interval: float = 60.0,
        error_budget: float = DEFAULT_ERROR_BUDGET,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.needed = int(needed)
        self.max_queued = int(max_queued)
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.error_budget = float(error_budget)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "needed": self.needed,
                "max_queued": self.max_queued,
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "error_budget": self.error_budget,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = ClaudeBatchHook(claude_batch_conn_id=self.conn_id)
        try:
            payload = await self._wait(hook)
        finally:
            await hook.aclose()
        yield TriggerEvent(payload)

    async def _wait(self, hook: ClaudeBatchHook) -> dict[str, Any]:
        try:
            client = (await hook.get_async_conn()).with_options(max_retries=0)
        except Exception as exc:  # a broken connection definition must end the wait with a reason
            return {
                "status": "error",
                "error_kind": "refused",
                "message": mask_secrets(f"Cannot build a client from connection {self.conn_id!r}: {exc}"),
            }
        import anthropic  # already loaded by get_async_conn, off the event loop

        budget = ErrorBudget(self.error_budget)
        while True:
            delay = self.poll_interval
            try:
                queued = await queued_requests_async(client)
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                described = hook.describe_error(exc)
                check = queue_check_after_error(
                    budget, getattr(exc, "status_code", None), retry_after(exc), self.poll_interval, time.time()
                )
                if check.action == "stop":
                    spent = "" if check.kind == "refused" else f" for {self.error_budget / 60:.1f} min"
                    return {
                        "status": "error",
                        "error_kind": check.kind,
                        "message": f"Cannot list batches{spent}: {described}",
                    }
                self.log.warning(
                    "Listing batches failed (%s), attempt %d; trying again in %.1f s",
                    described,
                    budget.failures,
                    check.delay,
                )
                delay = check.delay
            else:
                budget.record_success()
                if fits(queued, self.needed, self.max_queued):
                    return {"status": "fits", "queued": queued}
                self.log.info(
                    "%d requests queued in the workspace; %d more would exceed max_queued_requests=%d; waiting",
                    queued,
                    self.needed,
                    self.max_queued,
                )
            await asyncio.sleep(delay)
