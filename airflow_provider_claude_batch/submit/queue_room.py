"""Read the workspace's queued requests from the batch list, from a worker (sync) or a triggerer (async).

Both feed the same `QueueTally`, so the worker's first check and the trigger's later checks agree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.submit.queue import QueueTally

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

PAGE_SIZE = 100


def queued_requests(hook: ClaudeBatchHook) -> int:
    """Requests still queued in the workspace, as the newest day of the batch list shows them."""
    tally = QueueTally(time.time())
    for batch in hook.iter_batches(page_size=PAGE_SIZE):
        if not tally.add(batch):
            break
    return tally.total


def raise_unless_room(event: object) -> None:
    """The queue trigger's event: return when it found room, else raise what it met (a refusal is final)."""
    from airflow_provider_claude_batch.exceptions import BatchApiError, BatchApiRefusedError

    if isinstance(event, Mapping) and event.get("status") == "fits":
        return
    message = event.get("message") if isinstance(event, Mapping) else f"no usable event ({event!r})"
    refused = isinstance(event, Mapping) and event.get("error_kind") == "refused"
    error = BatchApiRefusedError if refused else BatchApiError
    raise error(
        f"Waiting for room in the batch queue failed: {message}"
        + ("" if refused else "; a retry looks again (nothing was created meanwhile).")
    )


async def queued_requests_async(client: AsyncAnthropic) -> int:
    """`queued_requests` without blocking the triggerer's event loop."""
    tally = QueueTally(time.time())
    async for batch in client.messages.batches.list(limit=PAGE_SIZE):
        if not tally.add(batch):
            break
    return tally.total
