"""Read the workspace's queued requests from the batch list, from a worker (sync) or a triggerer (async).

Both feed the same `QueueTally`, so the worker's first check and the trigger's later checks agree.
"""

from __future__ import annotations

import time
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


async def queued_requests_async(client: AsyncAnthropic) -> int:
    """`queued_requests` without blocking the triggerer's event loop."""
    tally = QueueTally(time.time())
    async for batch in client.messages.batches.list(limit=PAGE_SIZE):
        if not tally.add(batch):
            break
    return tally.total
