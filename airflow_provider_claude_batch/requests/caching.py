"""Automatic prompt caching: one 1-hour cache breakpoint at the end of the prefix requests share. Pure.

A prompt is a sequence of blocks in the API's prefix order: each tool definition, the system prompt
(a string is one block), then each message's content blocks. For every request without a
`cache_control` of its own, the breakpoint goes on the last block of the longest prefix it shares
with at least one other request of the same model and `output_config` (the cache key holds both), if
that prefix reaches the model's minimum cacheable length: the block the API writes the cache at and
the others read it from. (The API's automatic mode marks each request's last block, which no other
request of a batch shares.)

Fast and memory-bounded for 100,000 requests: a request too short to hold a cacheable prefix is
passed over by its length; the others are decoded to raw blocks and hashed, a chain of 8-byte
digests (one per prefix that is long enough), kept in flat arrays; shared digests are found by
sorting. Only the requests that get a breakpoint change: the marked block is spliced into the
request as written (or the request encoded again when that block cannot be found by its bytes), so
the buffer, and with it the fingerprint, changes exactly when the requests sent change.

Prefix lengths are estimated from their size (`estimate_tokens`); a later change can count them.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from itertools import compress
from operator import sub
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.requests.cache_blocks import CACHE_CONTROL, Chains, mark_block, warmup_params
from airflow_provider_claude_batch.requests.schema import CACHE_CONTROL_KEY

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_provider_claude_batch.requests.prepare import PreparedRequests

__all__ = [  # the breakpoint set (CACHE_CONTROL) is the blocks module's; named here with the rules
    "CACHE_CONTROL",
    "CachePlan",
    "SharedPrefix",
    "add_cache_breakpoints",
    "estimate_tokens",
    "minimum_cacheable_tokens",
]
MIN_SHARED_REQUESTS = 2
# Minimum cacheable prompt length in tokens (API facts §9, as of 2026-12-02; the table moves: pass
# `minimums=` to override). Shorter prefixes are not cached, with no error.
MIN_CACHEABLE_TOKENS: dict[str, int] = {
    **dict.fromkeys(
        (
            "claude-fable-5-1",
            "claude-mythos-5-1",
            "claude-opus-5-5",
            "claude-opus-5",
            "claude-fable-5",
            "claude-mythos-5",
        ),
        512,
    ),
    **dict.fromkeys(
        (
            "claude-opus-4-8",
            "claude-sonnet-5",
            "claude-sonnet-4-6",
            "claude-sonnet-4-5",
            "claude-opus-4-1",
            "claude-opus-4-0",
            "claude-opus-4",
            "claude-sonnet-4-0",
            "claude-sonnet-4",
        ),
        1024,
    ),
    **dict.fromkeys(("claude-mythos-preview", "claude-opus-4-7", "claude-3-5-haiku"), 2048),
    **dict.fromkeys(("claude-opus-4-6", "claude-opus-4-5", "claude-haiku-4-5"), 4096),
}
DEFAULT_MIN_CACHEABLE_TOKENS = 1024  # a model the table does not name (Sonnet 5.5, Haiku 5.5: unconfirmed)
MAX_WARMUP_PREFIXES = 100  # the most-shared prefixes a warm-up writes (one Messages call each)
_decoder = msgspec.json.Decoder()


def estimate_tokens(byte_count: int) -> int:
    """Tokens of a prefix of `byte_count` JSON bytes, estimated (about 4 bytes a token, as the emulator
    counts). The one place to swap in counted tokens (preflight's count_tokens) later.
    """
    return byte_count // 4


def minimum_cacheable_tokens(model: str, minimums: Mapping[str, int] = MIN_CACHEABLE_TOKENS) -> int:
    """The model's minimum cacheable prefix (a dated ID finds its alias's entry)."""
    found = minimums.get(model)
    if found is None and model[-9:-8] == "-" and model[-8:].isdigit():
        found = minimums.get(model[:-9])
    return DEFAULT_MIN_CACHEABLE_TOKENS if found is None else found


@dataclass(frozen=True)
class SharedPrefix:
    """One prefix the breakpoints close: its model, how many requests share it, where it ends."""

    model: str
    digest: str
    requests: int
    estimated_tokens: int
    block: str  # e.g. "system", "system[1]", "tools[3]", "messages[0].content[2]"
    # What a warm-up sends to write it (kept for the most-shared MAX_WARMUP_PREFIXES only).
    warmup_params: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CachePlan:
    """What automatic caching did to an input: the shared prefixes and the requests changed."""

    prefixes: tuple[SharedPrefix, ...] = ()
    changed: int = 0
    left_as_written: int = 0  # requests with cache_control of their own

    def describe(self) -> str:
        """One log line: how many requests, how long the prefixes, which block."""
        own = f"; {self.left_as_written} requests keep their own cache_control" if self.left_as_written else ""
        if not self.prefixes:
            return f"prompt caching: no prefix of 2+ requests reaches the model's minimum cacheable length{own}"
        shown = ", ".join(
            f"{p.requests} requests of {p.model} share ~{p.estimated_tokens} tokens up to {p.block}"
            for p in self.prefixes[:3]
        )
        more = f" (+{len(self.prefixes) - 3} more prefixes)" if len(self.prefixes) > 3 else ""
        return f"prompt caching: a 1h breakpoint on {self.changed} requests: {shown}{more}{own}"


def add_cache_breakpoints(
    prepared: PreparedRequests,
    minimums: Mapping[str, int] = MIN_CACHEABLE_TOKENS,
    *,
    warmup: bool = False,
) -> tuple[PreparedRequests, CachePlan]:
    """The requests with a breakpoint closing each shared prefix (`prepared` itself when none is placed),
    and what was done. With `warmup`, the most-shared prefixes carry the params that write them.
    """
    shortest = estimate_bytes_for(min((*minimums.values(), DEFAULT_MIN_CACHEABLE_TOKENS)))

    def minimum_bytes(model: str) -> int:
        return estimate_bytes_for(minimum_cacheable_tokens(model, minimums))

    starts, ends = prepared.starts, prepared.ends
    chains = Chains(minimum_bytes)
    owners = array("Q")  # request index of each chain
    firsts = array("l")  # its first long-enough block
    offsets = array("Q", [0])  # where its digests start in `digests`
    digests = array("Q")
    own = 0
    # Only requests long enough to hold a cacheable prefix are read (picked in C: no Python per request).
    for index in compress(range(len(prepared)), map(shortest.__le__, map(sub, ends, starts))):
        item = prepared.item(index)
        if CACHE_CONTROL_KEY in item:
            own += 1
            continue
        chain = chains.chain(item)
        if chain is None:
            continue
        owners.append(index)
        firsts.append(chain[1])
        digests.extend(chain[2])
        offsets.append(len(digests))
    del chains
    shared = _repeated(digests)
    if not shared:
        return prepared, CachePlan(left_as_written=own)
    chosen: dict[int, tuple[int, int]] = {}  # request index -> (block index, digest)
    for number, index in enumerate(owners):
        for at in range(offsets[number + 1] - 1, offsets[number] - 1, -1):
            if digests[at] in shared:
                chosen[index] = (firsts[number] + at - offsets[number], digests[at])
                break
    return _marked(prepared, chosen, own, minimum_bytes, warmup)


def estimate_bytes_for(tokens: int) -> int:
    """The fewest bytes `estimate_tokens` takes for `tokens` (requests shorter are passed over unread)."""
    return tokens * 4


def _repeated(digests: array[int]) -> set[int]:
    """The digests that occur at least `MIN_SHARED_REQUESTS` times (a sort: no dict of every prefix)."""
    ordered = sorted(digests)
    need = MIN_SHARED_REQUESTS - 1
    return {ordered[i] for i in range(need, len(ordered)) if ordered[i] == ordered[i - need]}


def _marked(
    prepared: PreparedRequests,
    chosen: dict[int, tuple[int, int]],
    own: int,
    minimum_bytes: Callable[[str], int],
    warmup: bool,
) -> tuple[PreparedRequests, CachePlan]:
    """A copy of `prepared` with each chosen request's breakpoint set, built in one pass: a run of unchanged
    items is copied in one piece, a changed one is spliced (or, if its block is not found, encoded again).
    Memory: the old buffer and the new one, nothing per request beyond its offsets.
    """
    groups: dict[int, list[Any]] = {}  # digest -> [model, requests, tokens, block, warm-up params]
    result = prepared.empty_like()  # spilled as `prepared` would be: memory bounded
    run_from = run_end = run_base = -1  # the unchanged items not yet copied: old offsets, and where they go
    try:
        for index, (start, end) in enumerate(zip(prepared.starts, prepared.ends, strict=True)):
            marked = mark_block(prepared.item(index), chosen[index][0], minimum_bytes) if index in chosen else None
            if marked is None:
                if run_from < 0:
                    if result.size:
                        result._write(b",")
                    run_from, run_base = start, result.size
                result.ends.append(run_base + end - run_from)
                run_end = end
                continue
            item, model, path, prefix_bytes = marked
            digest = chosen[index][1]
            group = groups.get(digest)
            if group is None:
                call = warmup_params(_decoder.decode(item)["params"], path) if warmup else None
                group = groups[digest] = [model, 0, estimate_tokens(prefix_bytes), path, call]
            group[1] += 1
            if run_from >= 0:
                _copy(prepared, run_from, run_end, result)
                run_from = -1
            if result.size:
                result._write(b",")
            result._write(item)
            result.ends.append(result.size)
            result._settle()
        if not groups:
            result.close()
            return prepared, CachePlan(left_as_written=own)
        if run_from >= 0:
            _copy(prepared, run_from, run_end, result)
        result._finish(hashed=False)
    except BaseException:
        result.close()
        raise
    result.custom_ids = prepared.custom_ids  # a breakpoint changes none of them, nor the facts (line, model,
    result.facts = prepared.facts  # max_tokens, sampling): the columns are shared
    result.as_written = prepared.as_written
    result.requests_read = prepared.requests_read
    ranked = sorted(groups.items(), key=lambda g: (-g[1][1], g[1][0], g[0]))
    prefixes = tuple(
        SharedPrefix(model, f"{digest:016x}", count, tokens, path, call if rank < MAX_WARMUP_PREFIXES else None)
        for rank, (digest, (model, count, tokens, path, call)) in enumerate(ranked)
    )
    return result, CachePlan(prefixes, sum(p.requests for p in prefixes), own)


def _copy(source: PreparedRequests, start: int, stop: int, to: PreparedRequests) -> None:
    """Append `source`'s bytes [start, stop) to `to`: a view when in memory, else a megabyte at a time."""
    if not source.spilled:
        with memoryview(source.buffer) as view:
            to._write(view[start:stop])
        to._settle()
        return
    for piece in source.chunks(start, stop):
        to._write(piece)
        to._settle()
