"""Validated requests as they are sent: their items (in memory, or in a spill file past a threshold),
offsets, custom_ids, preflight facts and fingerprint. Pure: the spill file and the hasher are given
(requests/spill.py, requests/hashing.py); requests/prepare.py builds it.

Memory stays bounded for an input of any size: given a `Spill` factory, once the items outgrow one
batch (more requests or bytes than a batch may hold: an input of one batch keeps today's in-memory
path and speed), the buffer is written to the spill file a few megabytes at a time (hashed first) and
emptied, so each batch's body is read back from the file as it is sent. What stays in memory per request is
nothing: its offsets, custom_id and preflight facts are columns (requests/columns.py) that spill with the
items, so what stays in memory is a few megabytes of their newest entries, whatever the input's size.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES, API_MAX_REQUESTS
from airflow_provider_claude_batch.requests.columns import IdColumn, IntColumn, StartsView
from airflow_provider_claude_batch.requests.facts import RequestFacts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from airflow_provider_claude_batch.requests.caching import CachePlan

BODY_PREFIX = b'{"requests":['
BODY_SUFFIX = b"]}"
FINGERPRINT_PREFIX = "v2:"  # (this form since JSONL lines are sent as written)
_HASH_BLOCK_BYTES = 1 << 20  # the buffer is handed to the hasher in pieces this big (each a copy) as it grows
_SPILL_CHUNK_BYTES = 4 << 20  # once spilling, the buffer is written out in pieces this big
_READ_CHUNK_BYTES = 1 << 20


class Hasher(Protocol):
    """What `prepare` feeds the buffer to as it grows (hashlib's sha256, or one hashing on a second thread)."""

    def update(self, data: bytes | bytearray, /) -> None:
        """Hash the next bytes of the buffer."""

    def hexdigest(self) -> str:
        """The digest of everything fed so far."""


class Spill(Protocol):
    """An append-only local file the items go to once they outgrow memory (requests/spill.py's)."""

    def write(self, data: bytes | bytearray, /) -> None:
        """Append `data`."""

    def read(self, offset: int, size: int, /) -> bytes:
        """`size` bytes from `offset` (all written before)."""

    def close(self) -> None:
        """Remove the file."""


class PreparedRequests:
    """Validated requests, serialized once, with their fingerprint; split with `plan_batches`.

    The items live in `buffer`, or (spilled: see the module docstring) in a spill file followed by
    `buffer`, which then holds only the newest few megabytes. Offsets count from the first item
    either way; read items with `item`, `read` or `iter_body`, never from `buffer` directly.
    """

    def __init__(
        self,
        spill: Callable[[], Spill] | None = None,
        spill_above: int = API_MAX_BODY_BYTES,
        spill_above_requests: int = API_MAX_REQUESTS,
    ) -> None:
        self.buffer = bytearray()
        self.ends = IntColumn("Q")  # each item's end offset (it starts one comma after the previous one's end)
        self.custom_ids = IdColumn()
        self.facts = RequestFacts()  # line, model, max_tokens, sampling fields: what preflight reads
        self.as_written = 0  # how many JSONL lines were kept as written (not kept by `subset`)
        # How many requests the input held, good and bad: once one is bad, the good ones after it are
        # checked (so the count and the problems are complete) but not kept, as nothing will be sent.
        self.requests_read = 0
        self._fingerprint: str | None = None
        # What automatic prompt caching did (requests/caching.py), once it ran; a subset has none.
        self.cache_plan: CachePlan | None = None
        self.spill_factory = spill
        self._spill_above = spill_above  # spill once the items are more bytes than this, or more requests than:
        self._spill_above_requests = spill_above_requests
        self._spill: Spill | None = None
        self._spilled = 0  # bytes in the spill file: `buffer` starts at this offset
        self._hasher: Hasher | None = None  # fed as the items grow (while prepared)
        self._hashed = 0

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def starts(self) -> StartsView:
        """Each item's start offset (derived from `ends`: nothing more is kept per request)."""
        return StartsView(self.ends)

    @property
    def size(self) -> int:
        """The bytes of all items with their separating commas (in memory or spilled)."""
        return self._spilled + len(self.buffer)

    def empty_like(self) -> PreparedRequests:
        """No requests yet, spilling as this one does (a follow-up round, a rewritten copy)."""
        return PreparedRequests(self.spill_factory, self._spill_above, self._spill_above_requests)

    @property
    def spilled(self) -> bool:
        """Whether the items are in a spill file (memory bounded) rather than all in `buffer`."""
        return self._spill is not None

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += data
        self._fingerprint = None

    def _append(self, custom_id: str, item: bytes) -> None:
        if len(self.ends):
            self._write(b",")
        self._write(item)
        self.ends.append(self.size)
        self.custom_ids.append(custom_id)

    def _settle(self) -> None:
        """After items were added: feed the hasher its next megabyte(s), and spill once over the threshold."""
        if self._hasher is not None and self.size - self._hashed >= _HASH_BLOCK_BYTES:
            self._hash_rest()
        if self.spill_factory is None or len(self.buffer) < _SPILL_CHUNK_BYTES:
            return
        if self._spill is None:
            if self.size <= self._spill_above and len(self.ends) <= self._spill_above_requests:
                return
            self._spill = self.spill_factory()
            self.spill_columns()
        self._flush()

    def spill_columns(self) -> None:
        """Move the per-request columns to files too (when the items spill: an input of many batches)."""
        if self.spill_factory is not None:
            columns: tuple[IntColumn | IdColumn, ...] = (self.ends, self.custom_ids, *self.facts.columns())
            for column in columns:
                column.spill(self.spill_factory)

    def _hash_rest(self) -> None:
        if self._hasher is not None and self.size > self._hashed:
            self._hasher.update(self.buffer[self._hashed - self._spilled :])  # a copy: the buffer changes
            self._hashed = self.size

    def _flush(self) -> None:
        """Write `buffer` to the spill file (hashed first) and empty it."""
        if self._spill is None or not self.buffer:
            return
        self._hash_rest()
        self._spill.write(self.buffer)
        self._spilled += len(self.buffer)
        self.buffer = bytearray()

    def _finish(self, *, hashed: bool) -> None:
        """The input is read: spill what is left (when spilling); with `hashed`, the fingerprint is the hasher's."""
        if hashed and self._hasher is not None:
            self._hash_rest()
            self._fingerprint = FINGERPRINT_PREFIX + self._hasher.hexdigest()
        self._hasher = None
        self._flush()

    def close(self) -> None:
        """Remove the spill file, if any (nothing can be read after)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def read(self, start: int, stop: int) -> bytes:
        """The items' bytes [start, stop) (offsets as in `starts`/`ends`)."""
        if self._spill is None or start >= self._spilled:
            return bytes(self.buffer[start - self._spilled : stop - self._spilled])
        head = self._spill.read(start, min(stop, self._spilled) - start)
        return head if stop <= self._spilled else head + bytes(self.buffer[: stop - self._spilled])

    def chunks(self, start: int, stop: int, chunk_bytes: int = _READ_CHUNK_BYTES) -> Iterator[bytes]:
        """The items' bytes [start, stop) in pieces of at most `chunk_bytes`."""
        for offset in range(start, stop, chunk_bytes):
            yield self.read(offset, min(stop, offset + chunk_bytes))

    def item(self, index: int) -> bytes:
        """Request `index`'s item as it is sent (`{"custom_id":..,"params":..}`)."""
        return self.read(self.starts[index], self.ends[index])

    @property
    def fingerprint(self) -> str:
        """sha256 of the requests in order, as they are sent: the same input always gives the same value."""
        if self._fingerprint is None:
            if self._spill is None:
                digest = hashlib.sha256(self.buffer)
            else:
                digest = hashlib.sha256()
                for piece in self.chunks(0, self.size, _SPILL_CHUNK_BYTES):
                    digest.update(piece)
            self._fingerprint = FINGERPRINT_PREFIX + digest.hexdigest()
        return self._fingerprint

    def recognises(self, recorded: str) -> bool:
        """Whether `recorded` (a submission record's fingerprint) is this input's: the same work, not paid twice."""
        return recorded == self.fingerprint

    def body_size(self, first: int, stop: int) -> int:
        """The bytes of the create body for requests [first, stop)."""
        return len(BODY_PREFIX) + self.ends[stop - 1] - self.starts[first] + len(BODY_SUFFIX)

    def iter_body(self, first: int, stop: int, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The create body for requests [first, stop), in chunks: a view of the buffer (or reads of the spill
        file), never a copy of it all.
        """
        yield BODY_PREFIX
        if self._spill is not None:
            yield from self.chunks(self.starts[first], self.ends[stop - 1], chunk_bytes)
        else:
            view = memoryview(self.buffer)[self.starts[first] : self.ends[stop - 1]]
            try:
                for offset in range(0, len(view), chunk_bytes):
                    yield bytes(view[offset : offset + chunk_bytes])
            finally:
                view.release()
        yield BODY_SUFFIX

    def body(self, first: int, stop: int) -> bytes:
        """The create body for requests [first, stop) in one piece."""
        return b"".join(self.iter_body(first, stop))

    def subset(self, custom_ids: Iterable[str]) -> PreparedRequests:
        """Only these requests (in input order), serialized exactly as before: a follow-up round."""
        wanted = set(custom_ids)
        chosen = self.empty_like()
        kept: list[int] = []
        for index, custom_id in enumerate(self.custom_ids):
            if custom_id in wanted:
                chosen._append(custom_id, self.item(index))
                chosen._settle()
                kept.append(index)
        chosen._finish(hashed=False)
        chosen.facts = self.facts.subset(kept)
        if chosen.spilled:
            chosen.spill_columns()
        missing = wanted - set(chosen.custom_ids)
        if missing:
            raise KeyError(f"not in the input: {sorted(missing)[:5]}")
        return chosen
