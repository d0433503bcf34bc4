"""The in-worker I/O shell of waiting: poll batches with the sync client inside a task (the sensor's
poke mode, or waiting without deferral), and turn any wait's outcome into success or the right
Airflow error. The decisions are `WaitTracker`'s, the same the trigger follows.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.exceptions import (
    BatchApiError,
    BatchApiRefusedError,
    BatchCanceledError,
    BatchWaitTimeoutError,
)
from airflow_provider_claude_batch.hooks.api_errors import retry_after
from airflow_provider_claude_batch.wait.events import BatchSnapshot, WaitOutcome, snapshot

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.wait.tracker import Decision, WaitTracker

log = logging.getLogger(__name__)


def poll_once(hook: ClaudeBatchHook, tracker: WaitTracker, now: float) -> Decision:
    """One poll of the pending batches, answered by the tracker."""
    import anthropic

    decision = tracker.before_poll(now)
    if decision is not None:
        return decision
    client = hook.client.with_options(max_retries=0)
    try:
        shots = [snapshot(client.messages.batches.retrieve(b)) for b in tracker.pending()]
    except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
        described = hook.describe_error(exc)
        decision = tracker.after_error(getattr(exc, "status_code", None), retry_after(exc), described, now)
        if decision.action == "sleep":
            log.warning("Polling failed (%s), attempt %d; the batches keep running", described, tracker.failures)
        return decision
    decision = tracker.after_success(shots, now)
    log.info("%s", tracker.progress(now))
    return decision


def wait_in_task(
    hook: ClaudeBatchHook, tracker: WaitTracker, sleep: Callable[[float], None] = time.sleep
) -> WaitOutcome:
    """Poll and sleep in this worker until the tracker finishes (the worker slot stays taken)."""
    while True:
        decision = poll_once(hook, tracker, time.time())
        if decision.outcome is not None:
            return decision.outcome
        sleep(decision.delay)


def raise_unless_ended_cleanly(outcome: WaitOutcome) -> None:
    """Success only if every batch ended without a cancel: a canceled batch is never a silent success."""
    if outcome.status == "timeout":
        raise BatchWaitTimeoutError(outcome.message, outcome.batch_ids)
    if outcome.status == "error":
        error = BatchApiRefusedError if outcome.error_kind == "refused" else BatchApiError
        raise error(outcome.message, outcome.batch_ids)
    canceled = [b for b in outcome.batches.values() if b.canceled]
    if canceled:
        raise BatchCanceledError(
            "Canceled before it finished: "
            + "; ".join(_counts(b) for b in canceled)
            + ". Whatever succeeded before the cancel can still be landed from the results.",
            outcome.batch_ids,
        )


def _counts(batch: BatchSnapshot) -> str:
    counts = ", ".join(f"{n} {kind}" for kind, n in batch.request_counts.items() if n)
    return f"{batch.id} ({counts}; cancel initiated {batch.cancel_initiated_at})"
