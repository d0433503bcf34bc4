"""Automatic prompt caching: one 1-hour cache breakpoint at the end of the prefix requests share. Pure.

A prompt is a sequence of blocks in the API's prefix order: each tool definition, the system prompt
(a string is one block), then each message's content blocks. For every request without a
`cache_control` of its own, the breakpoint goes on the last block of the longest prefix it shares
with at least one other request of the same model, if that prefix reaches the model's minimum
cacheable length: the block the API writes the cache at and the others read it from. (The API's
automatic mode marks each request's last block, which no other request of a batch shares.)

Fast and memory-bounded for 100,000 requests: a request too short to hold a cacheable prefix is
passed over by its length; the others are decoded to raw blocks and hashed, a chain of 8-byte
digests (one per prefix that is long enough), kept in flat arrays; shared digests are found by
sorting. Only the requests that get a breakpoint are decoded in full and encoded again, so the
buffer, and with it the fingerprint, changes exactly when the requests sent change.

Prefix lengths are estimated from their size (`estimate_tokens`); a later change can count them.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.requests.prepare import PreparedRequests
from airflow_provider_claude_batch.requests.schema import CACHE_CONTROL_KEY

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

CACHE_CONTROL = {"type": "ephemeral", "ttl": "1h"}  # batches can outlast the 5-minute TTL
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
_UNMARKABLE = ("thinking", "redacted_thinking")  # blocks the API refuses a cache_control on
_DIGEST_BYTES = 8


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
        if not self.prefixes:
            return "prompt caching: no prefix of 2+ requests reaches the model's minimum cacheable length"
        shown = ", ".join(
            f"{p.requests} requests of {p.model} share ~{p.estimated_tokens} tokens up to {p.block}"
            for p in self.prefixes[:3]
        )
        more = f" (+{len(self.prefixes) - 3} more prefixes)" if len(self.prefixes) > 3 else ""
        own = f"; {self.left_as_written} requests keep their own cache_control" if self.left_as_written else ""
        return f"prompt caching: a 1h breakpoint on {self.changed} requests: {shown}{more}{own}"


class _Message(msgspec.Struct, gc=False):
    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b'""')


class _Params(msgspec.Struct, gc=False):
    model: str = ""
    tools: list[msgspec.Raw] | None = None
    system: msgspec.Raw = msgspec.Raw()  # (empty: absent; a Raw is never None)
    tool_choice: msgspec.Raw = msgspec.Raw()
    thinking: msgspec.Raw = msgspec.Raw()
    messages: list[_Message] = []


class _Item(msgspec.Struct, gc=False):
    params: _Params


_item_decoder = msgspec.json.Decoder(_Item)
_blocks_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _units(params: _Params) -> Iterator[tuple[bytes, msgspec.Raw | bytes]]:
    """Each block of the prompt in prefix order, as (what it is part of, its raw JSON)."""
    for tool in params.tools or ():
        yield b"T", tool
    system = params.system
    if memoryview(system).nbytes not in (0, 4) or (
        memoryview(system).nbytes and memoryview(system).tobytes() != b"null"
    ):
        for block in [system] if _is_text(system) else _blocks_decoder.decode(system):
            yield b"S", block
    # Tool choice and thinking change what the messages' cache holds, not the tools' or system's.
    context = b"C" + bytes(params.tool_choice) + b"\0" + bytes(params.thinking)
    for message in params.messages:
        content = message.content
        blocks = [content] if _is_text(content) else _blocks_decoder.decode(content)
        for block in blocks:
            yield context + b"M" + message.role.encode() + b"\0", block
            context = b""


def _is_text(raw: msgspec.Raw) -> bool:
    return memoryview(raw)[:1].tobytes() == b'"'


def _chain(item: bytes, minimums: Mapping[str, int]) -> tuple[str, int, list[int]] | None:
    """(model, index of the first block whose prefix is long enough, the digest of each such prefix)."""
    try:
        params = _item_decoder.decode(item).params
    except (msgspec.DecodeError, RecursionError):
        return None
    minimum = minimum_cacheable_tokens(params.model, minimums)
    digest = hashlib.blake2b(params.model.encode(), digest_size=_DIGEST_BYTES).digest()
    size = 0
    first = -1
    digests: list[int] = []
    for index, (tag, raw) in enumerate(_units(params)):
        block = memoryview(raw)
        size += block.nbytes
        hasher = hashlib.blake2b(digest, digest_size=_DIGEST_BYTES)
        hasher.update(tag)
        hasher.update(block)
        digest = hasher.digest()
        if estimate_tokens(size) >= minimum:
            if first < 0:
                first = index
            digests.append(int.from_bytes(digest))
    return (params.model, first, digests) if digests else None


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
    buffer, starts, ends = prepared.buffer, prepared.starts, prepared.ends
    owners = array("Q")  # request index of each chain
    firsts = array("l")  # its first long-enough block
    offsets = array("Q", [0])  # where its digests start in `digests`
    digests = array("Q")
    models: list[str] = []
    own = 0
    for index in range(len(prepared)):
        start, end = starts[index], ends[index]
        if end - start < shortest:
            continue
        item = bytes(buffer[start:end])
        if CACHE_CONTROL_KEY in item:
            own += 1
            continue
        chain = _chain(item, minimums)
        if chain is None:
            continue
        models.append(chain[0])
        owners.append(index)
        firsts.append(chain[1])
        digests.extend(chain[2])
        offsets.append(len(digests))
    shared = _repeated(digests)
    if not shared:
        return prepared, CachePlan(left_as_written=own)
    chosen: dict[int, tuple[int, int]] = {}  # request index -> (block index, digest)
    for number, index in enumerate(owners):
        for at in range(offsets[number + 1] - 1, offsets[number] - 1, -1):
            if digests[at] in shared:
                chosen[index] = (firsts[number] + at - offsets[number], digests[at])
                break
    return _marked(prepared, chosen, own, warmup)


def estimate_bytes_for(tokens: int) -> int:
    """The fewest bytes `estimate_tokens` takes for `tokens` (requests shorter are passed over unread)."""
    return tokens * 4


def _repeated(digests: array[int]) -> set[int]:
    """The digests that occur at least `MIN_SHARED_REQUESTS` times (a sort: no dict of every prefix)."""
    ordered = sorted(digests)
    need = MIN_SHARED_REQUESTS - 1
    return {ordered[i] for i in range(need, len(ordered)) if ordered[i] == ordered[i - need]}


def _marked(
    prepared: PreparedRequests, chosen: dict[int, tuple[int, int]], own: int, warmup: bool
) -> tuple[PreparedRequests, CachePlan]:
    """A copy of `prepared` with each chosen request's breakpoint set and encoded again."""
    result = PreparedRequests()
    result.as_written = prepared.as_written
    result.requests_read = prepared.requests_read
    groups: dict[int, list[Any]] = {}  # digest -> [model, requests, tokens, block, warm-up params]
    buffer = prepared.buffer
    for index, custom_id in enumerate(prepared.custom_ids):
        item = bytes(buffer[prepared.starts[index] : prepared.ends[index]])
        if index in chosen:
            block_index, digest = chosen[index]
            request = _decoder.decode(item)
            marked = _mark(request["params"], block_index)
            if marked is not None:
                item = _encoder.encode(request)
                group = groups.get(digest)
                if group is None:
                    params = request["params"]
                    tokens = estimate_tokens(marked[1])
                    call = _warmup_params(params, marked[0]) if warmup else None
                    group = groups[digest] = [params["model"], 0, tokens, marked[0], call]
                group[1] += 1
        result._append(custom_id, item)
    prefixes = sorted(
        (
            SharedPrefix(model, f"{digest:016x}", count, tokens, block, params)
            for digest, (model, count, tokens, block, params) in groups.items()
        ),
        key=lambda p: (-p.requests, p.model, p.digest),
    )
    prefixes = [
        p
        if warmup and rank < MAX_WARMUP_PREFIXES
        else SharedPrefix(p.model, p.digest, p.requests, p.estimated_tokens, p.block)
        for rank, p in enumerate(prefixes)
    ]
    changed = sum(p.requests for p in prefixes)
    if not changed:
        return prepared, CachePlan(left_as_written=own)
    return result, CachePlan(tuple(prefixes), changed, own)


def _blocks(params: dict[str, Any]) -> Iterator[tuple[str, Any, Any]]:
    """Each block in prefix order as (its path, its container, its key or index there)."""
    for index in range(len(params.get("tools") or ())):
        yield f"tools[{index}]", params["tools"], index
    system = params.get("system")
    if isinstance(system, str):
        yield "system", params, "system"
    elif system is not None:
        for index in range(len(system)):
            yield f"system[{index}]", system, index
    for number, message in enumerate(params["messages"]):
        content = message["content"]
        if isinstance(content, str):
            yield f"messages[{number}].content", message, "content"
        else:
            for index in range(len(content)):
                yield f"messages[{number}].content[{index}]", content, index


def _mark(params: dict[str, Any], block_index: int) -> tuple[str, int] | None:
    """Put the breakpoint on block `block_index`, or the nearest earlier block that takes one, within
    the shared prefix; returns (its path, the prefix's bytes), or None if no block there can take it.
    """
    blocks = list(_blocks(params))
    sizes = [len(_encoder.encode(container[key])) for _, container, key in blocks]
    minimum = estimate_bytes_for(minimum_cacheable_tokens(params["model"]))
    for at in range(block_index, -1, -1):
        path, container, key = blocks[at]
        value = container[key]
        prefix_bytes = sum(sizes[: at + 1])
        if prefix_bytes < minimum:
            return None
        if isinstance(value, str):
            container[key] = [{"type": "text", "text": value, "cache_control": dict(CACHE_CONTROL)}]
            return path, prefix_bytes
        if isinstance(value, dict) and value.get("type") not in _UNMARKABLE:
            value["cache_control"] = dict(CACHE_CONTROL)
            return path, prefix_bytes
    return None


def _warmup_params(params: dict[str, Any], block: str) -> dict[str, Any]:
    """A Messages call that writes the prefix up to `block` (its breakpoint set) and answers one token."""
    call: dict[str, Any] = {"model": params["model"], "max_tokens": 1}
    placeholder = [{"role": "user", "content": "."}]
    section = block.split("[")[0].split(".")[0]
    if section == "tools":
        call["tools"] = params["tools"][: int(block[6:-1]) + 1]
        return call | {"messages": placeholder}
    if params.get("tools"):
        call["tools"] = params["tools"]
    if section == "system":
        system = params["system"]
        call["system"] = system[: int(block[7:-1]) + 1] if block != "system" else system
        return call | {"messages": placeholder}
    for name in ("tool_choice", "system"):
        if name in params:
            call[name] = params[name]
    number = int(block[9 : block.index("]")])
    messages = params["messages"][:number]
    last = dict(params["messages"][number])
    if block.endswith("]"):  # a block of a list: the blocks up to it
        last["content"] = last["content"][: int(block[block.rindex("[") + 1 : -1]) + 1]
    return call | {"messages": [*messages, last]}
