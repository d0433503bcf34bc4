"""The queue guard's arithmetic: how many requests the workspace still has queued, and whether more fit.

The API caps requests waiting in the processing queue per organization; a create over the cap is
refused. A backfill that submits many partitions at once waits for room instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from airflow_provider_claude_batch.defaults import BATCH_LIFETIME, DEADLINE_MARGIN

if TYPE_CHECKING:
    from datetime import datetime

    from anthropic.types.messages import MessageBatchRequestCounts

LOOKBACK_SECONDS = BATCH_LIFETIME + DEADLINE_MARGIN


def still_queued(processing_status: str, processing: int) -> int:
    """Requests of one listed batch that still count against the queue cap."""
    return processing if processing_status != "ended" else 0


class ListedBatchLike(Protocol):
    """What the tally reads of a listed batch (the SDK's `MessageBatch` has it)."""

    @property
    def created_at(self) -> datetime:
        """When the batch was created."""
        ...

    @property
    def processing_status(self) -> str:
        """in_progress, canceling or ended."""
        ...

    @property
    def request_counts(self) -> MessageBatchRequestCounts:
        """The batch's counts; `processing` is what still queues."""
        ...


@dataclass
class QueueTally:
    """The one count of queued requests, fed the batch list newest first (sync or async alike)."""

    now: float
    total: int = 0

    def add(self, batch: ListedBatchLike) -> bool:
        """Count one listed batch; False once the listing is old enough to stop reading."""
        if listing_can_stop(batch.created_at.timestamp(), self.now):
            return False
        self.total += still_queued(batch.processing_status, batch.request_counts.processing)
        return True


def fits(queued: int, needed: int, max_queued: int) -> bool:
    """Whether `needed` more requests stay within the cap."""
    return queued + needed <= max_queued


def listing_can_stop(created_at: float, now: float) -> bool:
    """Listing is newest first, and a batch older than its 24 h lifetime has ended: stop there."""
    return created_at < now - LOOKBACK_SECONDS
