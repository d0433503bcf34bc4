"""The emulator's prompt cache: which prefixes were written, until when, and what a request reads or writes.

Modelled on the prompt-caching page (shared API facts, §7 and §9): the prefix runs tools, system,
messages up to a block marked with `cache_control` (a top-level one marks the last block); a
breakpoint below the model's minimum cacheable length caches nothing; an entry lives for its TTL
from the last request that wrote or read it; a request reads the longest earlier entry at or
before its last breakpoint (looking back 20 blocks from each breakpoint) and writes the rest, billed
in three positions: A = tokens at the hit, B = at the last 1-hour breakpoint after A (else A),
C = at the last breakpoint; reads A, 1-hour writes B - A, 5-minute writes C - B. Batches hit
best-effort: an entry found is read with the configured probability (decided per request digest).
The key holds the model and `output_config` (third-party measurements: a changed schema or effort misses
the cache). Tokens are the emulator's: a block's JSON bytes / 4. Pure: the caller passes the clock's time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterator

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
LOOKBACK_BLOCKS = 20
# Minimum cacheable prompt length in tokens; other models: DEFAULT_MINIMUM.
_MINIMUM_BY_MODEL = {
    model: tokens
    for tokens, models in (
        (512, "fable-5-1 mythos-5-1 opus-5-5 opus-5 fable-5 mythos-5"),
        (1024, "opus-4-8 sonnet-5 sonnet-4-6 sonnet-4-5 opus-4-1 opus-4-0 opus-4 sonnet-4-0 sonnet-4"),
        (2048, "mythos-preview opus-4-7 3-5-haiku"),
        (4096, "opus-4-6 opus-4-5 haiku-4-5"),
    )
    for model in (f"claude-{name}" for name in models.split())
}
DEFAULT_MINIMUM = 1024
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def minimum_tokens(model: str) -> int:
    """The model's minimum cacheable prefix in the emulator (a dated ID finds its alias)."""
    return _MINIMUM_BY_MODEL.get(model, _MINIMUM_BY_MODEL.get(model[:-9], DEFAULT_MINIMUM))


@dataclass(frozen=True)
class CacheUse:
    """What one request read from the cache and wrote to it, in tokens."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


@dataclass(frozen=True)
class _Boundary:
    tokens: int  # of the prefix up to and including this block
    key: bytes  # model + prefix digest
    ttl: str | None  # the block's breakpoint TTL, if it has one


class PromptCache:
    """The cache of one emulated workspace: entry key -> (expires at, TTL seconds)."""

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[float, float]] = {}

    def use(
        self,
        params: bytes,
        now: float,
        *,
        read_allowed: bool = True,
        writes: list[tuple[bytes, float, float]] | None = None,
    ) -> CacheUse:
        """Read and write the request's prefixes at time `now`; `read_allowed=False`: a best-effort miss.

        `writes`: the entries written are appended there (key, expires at, TTL seconds) for `store` to add
        later, instead of at once: an entry is readable only after the first response begins, so calls
        in flight together all write it (API facts, §9).
        """
        if b'"cache_control"' not in params:
            return CacheUse()
        decoded = _decoder.decode(params)
        boundaries = list(_boundaries(decoded))
        model = str(decoded.get("model", ""))
        breakpoints = [i for i, b in enumerate(boundaries) if b.ttl is not None and b.tokens >= minimum_tokens(model)]
        if not breakpoints:
            return CacheUse()
        hit = -1
        if read_allowed:
            looked = {j for i in breakpoints for j in range(max(0, i - LOOKBACK_BLOCKS + 1), i + 1)}
            for j in sorted(looked, reverse=True):
                entry = self.entries.get(boundaries[j].key)
                if entry is not None and entry[0] > now:
                    hit = j
                    self.entries[boundaries[j].key] = (now + entry[1], entry[1])  # a hit refreshes it
                    break
        a = boundaries[hit].tokens if hit >= 0 else 0
        after = [i for i in breakpoints if i > hit]
        last = breakpoints[-1]
        c = max(a, boundaries[last].tokens)
        one_hour = [i for i in after if boundaries[i].ttl == "1h"]
        b = boundaries[one_hour[-1]].tokens if one_hour else a
        written = []
        for i in after:
            seconds = TTL_SECONDS[boundaries[i].ttl or "5m"]
            written.append((boundaries[i].key, now + seconds, seconds))
        if writes is None:
            self.store(written)
        else:
            writes.extend(written)
        return CacheUse(read=a, write_1h=max(0, b - a), write_5m=max(0, c - max(a, b)))

    def store(self, written: list[tuple[bytes, float, float]]) -> None:
        """Make written entries readable (key, expires at, TTL seconds)."""
        for key, expires_at, seconds in written:
            self.entries[key] = (expires_at, seconds)

    def clear(self) -> None:
        """Forget every entry."""
        self.entries.clear()


def _boundaries(params: dict[str, Any]) -> Iterator[_Boundary]:
    """Each block of the prompt in prefix order, with its prefix's tokens, key and breakpoint TTL."""
    digest = hashlib.blake2b(str(params.get("model", "")).encode(), digest_size=16)
    # output_config (a format's schema, effort) is part of the key: requests that differ in it do not share
    # an entry (observed on the Claude API and Bedrock by third parties; undocumented).
    if params.get("output_config") is not None:
        digest.update(b"output_config" + _encoder.encode(params["output_config"]))
    tokens = 0
    automatic = params.get("cache_control")
    blocks = list(_blocks(params))
    for number, block in enumerate(blocks):
        control = block.pop("cache_control", None) if isinstance(block, dict) else None
        if control is None and number == len(blocks) - 1 and isinstance(automatic, dict):
            control = automatic
        encoded = _encoder.encode(block)
        tokens += len(encoded) // 4
        digest.update(encoded)
        ttl = control.get("ttl", "5m") if isinstance(control, dict) else None
        yield _Boundary(tokens, digest.copy().digest(), ttl if ttl in TTL_SECONDS else None)


def _blocks(params: dict[str, Any]) -> Iterator[object]:
    """Tools, system blocks, then each message's content blocks (a string is one text block)."""
    yield from params.get("tools") or ()
    system = params.get("system")
    if isinstance(system, str):
        yield {"type": "text", "text": system}
    elif isinstance(system, list):
        yield from system
    for message in params.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(content, str):
            yield {"role": role, "type": "text", "text": content}
        elif isinstance(content, list):
            for block in content:
                yield {"role": role, **block} if isinstance(block, dict) else block
