"""The two triggers, declared on `ClaudeBatchBaseTrigger`: wait for batches, wait for queue room.

`ClaudeBatchTrigger` waits in the triggerer, without a worker slot, until every batch has ended.
It polls through the triggerer's shared poller for its connection (one SDK async client, and one
List call for many triggers' batches: see `wait.poller`) and rides out API outages for a time
budget. It never cancels a batch because of an error of its own: only `on_kill`, when a user marked
the deferred task failed, and only with `cancel_on_kill`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.defaults import (
    DEFAULT_CONN_ID,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_claude_batch.hooks.api_errors import describe_api_error, retry_after
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.submit.queue import fits
from airflow_provider_claude_batch.submit.queue_room import queued_requests_async
from airflow_provider_claude_batch.triggers.base import ClaudeBatchBaseTrigger
from airflow_provider_claude_batch.wait.errors import ErrorBudget, decide_after_error
from airflow_provider_claude_batch.wait.events import WaitOutcome, WaitPayload
from airflow_provider_claude_batch.wait.tracker import WaitTracker

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow.triggers.base import BaseTrigger
    from anthropic import AsyncAnthropic

    from airflow_provider_claude_batch.wait.events import ErrorKind
    from airflow_provider_claude_batch.wait.poller import SharedPoller


class ClaudeBatchTrigger(ClaudeBatchBaseTrigger):
    """Poll one or many batches until all have ended, the deadline passes, or the API fails for good."""

    classpath = "airflow_provider_claude_batch.triggers.claude_batch.ClaudeBatchTrigger"
    fields = (
        "batch_ids",
        "conn_id",
        "deadline",
        "poll_interval",
        "max_poll_interval",
        "error_budget",
        "cancel_on_kill",
        "started_at",
    )

    def __init__(
        self,
        batch_ids: Sequence[str],
        conn_id: str = DEFAULT_CONN_ID,
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

    def polled_batch_ids(self) -> Sequence[str]:
        """This trigger's batches, polled through the shared poller."""
        return self.batch_ids

    def tracker(self) -> WaitTracker:
        """A fresh tracker with this trigger's settings (the in-worker loop follows the same rules)."""
        return WaitTracker(
            self.batch_ids,
            self.deadline,
            self.poll_interval,
            self.max_poll_interval,
            self.error_budget,
            self.started_at,
        )

    def error_payload(self, kind: ErrorKind, message: str) -> WaitPayload:
        """An outcome that names the batches and why the wait ended without them."""
        return WaitOutcome("error", self.batch_ids, {}, message, kind).to_payload()

    async def wait(self, poller: SharedPoller, client: AsyncAnthropic) -> WaitPayload:
        """Sleep until the connection's poll cycles end the wait; log what they report, in this task's log."""
        with poller.watch(self.tracker(), progress=self.log.isEnabledFor(logging.INFO)) as watch:
            while True:
                for level, line in await watch.news():
                    self.log.log(level, "%s", line)
                if watch.outcome is not None:
                    return watch.outcome.to_payload()

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


class ClaudeBatchQueueTrigger(ClaudeBatchBaseTrigger):
    """Wait until the workspace's queued requests leave room for `needed` more (the queue guard).

    Errors follow the wait trigger's rules (`decide_after_error`): a refusal (401/403/404/407...)
    ends the wait at once, any other error is ridden out for `error_budget` seconds, then the wait
    ends with an "unavailable" event (the operator fails, retryably; nothing was created meanwhile).
    """

    classpath = "airflow_provider_claude_batch.triggers.claude_batch.ClaudeBatchQueueTrigger"
    fields = ("needed", "max_queued", "conn_id", "poll_interval", "error_budget")

    def __init__(
        self,
        needed: int,
        max_queued: int,
        conn_id: str = DEFAULT_CONN_ID,
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

    def error_payload(self, kind: ErrorKind, message: str) -> Mapping[str, object]:
        """The queue guard's error event: the operator fails, retryably unless `kind` is "refused"."""
        return {"status": "error", "error_kind": kind, "message": message}

    async def wait(self, poller: SharedPoller, client: AsyncAnthropic) -> Mapping[str, object]:
        """Count the queued requests every `poll_interval` until `needed` more fit under `max_queued`."""
        import anthropic  # already loaded by the client build, off the event loop

        budget = ErrorBudget(self.error_budget)
        while True:
            delay = self.poll_interval
            try:
                queued = await queued_requests_async(client)
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                described = poller.describe(exc)
                decision = decide_after_error(
                    budget, getattr(exc, "status_code", None), retry_after(exc), self.poll_interval, time.time()
                )
                if decision.kind is not None:
                    spent = "" if decision.kind == "refused" else f" for {self.error_budget / 60:.1f} min"
                    return self.error_payload(decision.kind, f"Cannot list batches{spent}: {described}")
                self.log.warning(
                    "Listing batches failed (%s), attempt %d; trying again in %.1f s",
                    described,
                    budget.failures,
                    decision.delay,
                )
                delay = decision.delay
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
