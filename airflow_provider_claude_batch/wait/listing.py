"""One shared poll cycle's decisions: list or retrieve, how long to gather requests, when paging stops.

Pure: the triggers' shared poller feeds these the IDs its triggers want and the pages it read, and
acts on the answers. A List page carries up to 1,000 batches for one request, so a triggerer
waiting on many batches lists them instead of retrieving each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime  # noqa: TC003 (msgspec reads the annotations at runtime)
from typing import TYPE_CHECKING

import msgspec

from airflow_provider_claude_batch.submit.queue import listing_can_stop
from airflow_provider_claude_batch.wait.events import BatchSnapshot

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

# From this many wanted batches up, a cycle lists (one page costs about as much CPU as a handful of
# retrieves); below it, it retrieves each batch as a lone trigger always has.
LIST_THRESHOLD = 8
PAGE_LIMIT = 1000
# A trigger asking for a poll waits at most this share of its poll delay (capped) for others to join.
COALESCE_SHARE = 0.2
MAX_COALESCE_SECONDS = 10.0
# A poll due within this share of its delay joins a cycle that other triggers' polls start.
EARLY_SHARE = 0.5


class ListedBatch(msgspec.Struct, gc=False):
    """The fields of a listed MessageBatch that a wait needs; the rest of the object is skipped.

    Untracked by the garbage collector (it holds only strings, ints and datetimes, so it cannot be in
    a reference cycle): a page of 1,000 adds nothing for a collection to walk.
    """

    id: str
    processing_status: str
    request_counts: dict[str, int]
    created_at: datetime
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None

    def snapshot(self) -> BatchSnapshot:
        """The same BatchSnapshot that `events.snapshot` makes from the SDK's MessageBatch."""
        ended, canceled = self.ended_at, self.cancel_initiated_at
        return BatchSnapshot(
            id=self.id,
            processing_status=self.processing_status,
            request_counts=self.request_counts,
            created_at=self.created_at.isoformat(),
            ended_at=ended.isoformat() if ended is not None else None,
            cancel_initiated_at=canceled.isoformat() if canceled is not None else None,
        )


class ListPage(msgspec.Struct, gc=False):
    """One page of the List endpoint, decoded into the fields a wait needs."""

    data: list[ListedBatch]
    has_more: bool = False
    last_id: str | None = None


_page_decoder = msgspec.json.Decoder(ListPage)


def decode_page(body: bytes) -> ListPage:
    """A List response body; raises `msgspec.DecodeError`/`ValidationError` if its shape is not the API's."""
    return _page_decoder.decode(body)


def use_listing(wanted: int) -> bool:
    """Whether a cycle wanting this many batches lists them rather than retrieving each one."""
    return wanted >= LIST_THRESHOLD


def page_cap(wanted: int) -> int:
    """Pages a cycle may read: each page must pay for itself against the retrieves it replaces."""
    return max(1, wanted // LIST_THRESHOLD)


def coalesce_patience(poll_delay: float) -> float:
    """How long a trigger's poll may wait for other triggers' polls to join one cycle.

    Triggers sleep a jittered 90-100% of their delay, so their wake-ups spread over a tenth of it:
    a fifth catches them all in one cycle, and a batch that takes minutes to hours is no later for it.
    """
    return max(0.0, min(MAX_COALESCE_SECONDS, COALESCE_SHARE * poll_delay))


def early_allowance(poll_delay: float) -> float:
    """How long before it is due a trigger's poll may join a cycle that other triggers' polls start.

    Groups of triggers that fell due apart (started over a few seconds, or after different delays)
    would otherwise each read the same List pages in cycles of their own, forever: with up to half a
    delay early and a fifth late (`coalesce_patience`), two groups share a cycle after one round. The
    early poll rides on requests made anyway.
    """
    return max(0.0, EARLY_SHARE * poll_delay)


@dataclass
class ListingScan:
    """Reads newest-first pages until every wanted batch is found or the rest cannot be in the listing."""

    wanted: frozenset[str]
    now: float
    max_pages: int
    # created_at (epoch) of the oldest wanted batch, when every wanted batch's is known: past it, the
    # listing holds none of them.
    oldest_wanted: float | None = None
    found: dict[str, ListedBatch] = field(default_factory=dict)
    pages: int = 0

    def feed(self, page: ListPage) -> bool:
        """Take one page; True if the next page is worth reading."""
        self.pages += 1
        wanted, found = self.wanted, self.found
        for batch in page.data:
            if batch.id in wanted:
                found[batch.id] = batch
        if len(found) == len(wanted) or not page.has_more or not page.data or self.pages >= self.max_pages:
            return False
        oldest_listed = page.data[-1].created_at.timestamp()
        if self.oldest_wanted is not None and oldest_listed < self.oldest_wanted:
            return False
        return not listing_can_stop(oldest_listed, self.now)

    def missing(self) -> list[str]:
        """The wanted batches the pages read so far did not hold (to be retrieved one by one)."""
        return sorted(self.wanted.difference(self.found))


def oldest_known(batch_ids: Iterable[str], created_at: Mapping[str, float]) -> float | None:
    """The oldest creation time among these batches, or None if any of them has not been seen yet."""
    oldest: float | None = None
    for batch_id in batch_ids:
        created = created_at.get(batch_id)
        if created is None:
            return None
        oldest = created if oldest is None else min(oldest, created)
    return oldest


def answer_for(
    batch_ids: Sequence[str], found: Mapping[str, BatchSnapshot], errors: Mapping[str, BaseException]
) -> list[BatchSnapshot] | BaseException:
    """One trigger's share of a cycle: its snapshots, or the first error met by one of its batches."""
    for batch_id in batch_ids:
        error = errors.get(batch_id)
        if error is not None:
            return error
    missing = [b for b in batch_ids if b not in found]
    if missing:
        return LookupError(f"the poll cycle has no answer for {missing}")
    return [found[b] for b in batch_ids]
