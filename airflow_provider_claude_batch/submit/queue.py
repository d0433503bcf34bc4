"""The queue guard's arithmetic: how many requests the workspace still has queued, and whether more fit.

The API caps requests waiting in the processing queue per organization; a create over the cap is
refused. A backfill that submits many partitions at once waits for room instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_claude_batch.wait.polling import BATCH_LIFETIME, DEADLINE_MARGIN

if TYPE_CHECKING:
    from collections.abc import Iterable

LOOKBACK_SECONDS = BATCH_LIFETIME + DEADLINE_MARGIN


def still_queued(processing_status: str, processing: int) -> int:
    """Requests of one listed batch that still count against the queue cap."""
    return processing if processing_status != "ended" else 0


def queued_total(batches: Iterable[tuple[str, int]]) -> int:
    return sum(still_queued(status, processing) for status, processing in batches)


def fits(queued: int, needed: int, max_queued: int) -> bool:
    return queued + needed <= max_queued


def listing_can_stop(created_at: float, now: float) -> bool:
    """Listing is newest first, and a batch older than its 24 h lifetime has ended: stop there."""
    return created_at < now - LOOKBACK_SECONDS
