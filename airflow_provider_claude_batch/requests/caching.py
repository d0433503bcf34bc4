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
from itertools import compress
from operator import sub
from typing import TYPE_CHECKING, Any, NamedTuple

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


class _Block(msgspec.Struct, gc=False):
    type: str = ""


_block_decoder = msgspec.json.Decoder(_Block)
_MARK = b'"cache_control":' + _encoder.encode(CACHE_CONTROL)
_MEMO_MIN_BYTES = 1024  # blocks this big have their digest remembered (a shared instruction: hashed once)
_MEMO_MAX_BYTES = 16 << 20


class _Unit(NamedTuple):
    tag: bytes  # what the block is part of (and, for the first message block, the tool choice and thinking)
    raw: msgspec.Raw
    path: str


def _units(params: _Params) -> Iterator[_Unit]:
    """Each block of the prompt in prefix order."""
    for index, tool in enumerate(params.tools or ()):
        yield _Unit(b"T", tool, f"tools[{index}]")
    system = params.system
    if _present(system):
        if _is_text(system):
            yield _Unit(b"S", system, "system")
        else:
            for index, block in enumerate(_blocks_decoder.decode(system)):
                yield _Unit(b"S", block, f"system[{index}]")
    # Tool choice and thinking change what the messages' cache holds, not the tools' or system's.
    context = b"C" + bytes(params.tool_choice) + b"\0" + bytes(params.thinking)
    for number, message in enumerate(params.messages):
        content = message.content
        tag = context + b"M" + message.role.encode() + b"\0"
        context = b""
        if _is_text(content):
            yield _Unit(tag, content, f"messages[{number}].content")
            continue
        for index, block in enumerate(_blocks_decoder.decode(content)):
            yield _Unit(tag, block, f"messages[{number}].content[{index}]")
            tag = b"M"


def _present(raw: msgspec.Raw) -> bool:
    view = memoryview(raw)
    return view.nbytes > 0 and not (view.nbytes == 4 and view.tobytes() == b"null")


def _is_text(raw: msgspec.Raw) -> bool:
    return memoryview(raw)[:1].tobytes() == b'"'


class _Chains:
    """Digest chains of requests' prefixes; a big block seen before (the shared instruction) is compared,
    not hashed again (a memcmp is many times faster than a hash).
    """

    def __init__(self, minimums: Mapping[str, int]) -> None:
        self.minimums = minimums
        self.memo: dict[tuple[bytes, bytes, int, bytes], tuple[bytes, bytes]] = {}
        self.memo_bytes = 0

    def chain(self, item: bytes) -> tuple[str, int, list[int]] | None:
        """(model, index of the first block whose prefix is long enough, the digest of each such prefix)."""
        try:
            params = _item_decoder.decode(item).params
        except (msgspec.DecodeError, RecursionError):
            return None
        minimum = minimum_cacheable_tokens(params.model, self.minimums)
        digest = hashlib.blake2b(params.model.encode(), digest_size=_DIGEST_BYTES).digest()
        size = 0
        first = -1
        digests: list[int] = []
        for index, unit in enumerate(_units(params)):
            block = memoryview(unit.raw)
            size += block.nbytes
            digest = self._next(digest, unit.tag, block)
            if estimate_tokens(size) >= minimum:
                if first < 0:
                    first = index
                digests.append(int.from_bytes(digest))
        return (params.model, first, digests) if digests else None

    def _next(self, previous: bytes, tag: bytes, block: memoryview) -> bytes:
        if block.nbytes < _MEMO_MIN_BYTES:
            return _digest(previous, tag, block)
        content = block.tobytes()
        key = (previous, tag, len(content), content[:32])
        known = self.memo.get(key)
        if known is not None and known[0] == content:
            return known[1]
        digest = _digest(previous, tag, content)
        if self.memo_bytes + len(content) > _MEMO_MAX_BYTES:
            self.memo.clear()
            self.memo_bytes = 0
        self.memo[key] = (content, digest)
        self.memo_bytes += len(content)
        return digest


def _digest(previous: bytes, tag: bytes, block: memoryview | bytes) -> bytes:
    hasher = hashlib.blake2b(previous, digest_size=_DIGEST_BYTES)
    hasher.update(tag)
    hasher.update(block)
    return hasher.digest()


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
    chains = _Chains(minimums)
    owners = array("Q")  # request index of each chain
    firsts = array("l")  # its first long-enough block
    offsets = array("Q", [0])  # where its digests start in `digests`
    digests = array("Q")
    own = 0
    # Only requests long enough to hold a cacheable prefix are read (picked in C: no Python per request).
    for index in compress(range(len(prepared)), map(shortest.__le__, map(sub, ends, starts))):
        item = bytes(buffer[starts[index] : ends[index]])
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
    return _marked(prepared, chosen, own, minimums, warmup)


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
    minimums: Mapping[str, int],
    warmup: bool,
) -> tuple[PreparedRequests, CachePlan]:
    """A copy of `prepared` with each chosen request's breakpoint set, built in one pass: a run of unchanged
    items is copied in one piece, a changed one is spliced (or, if its block is not found, encoded again).
    Memory: the old buffer and the new one, nothing per request beyond its offsets.
    """
    groups: dict[int, list[Any]] = {}  # digest -> [model, requests, tokens, block, warm-up params]
    result = PreparedRequests()
    out = result.buffer
    run_from = run_end = run_base = -1  # the unchanged items not yet copied: old offsets, and where they go
    view = memoryview(prepared.buffer)
    try:
        for index, (start, end) in enumerate(zip(prepared.starts, prepared.ends, strict=True)):
            marked = _mark(bytes(view[start:end]), chosen[index][0], minimums) if index in chosen else None
            if marked is None:
                if run_from < 0:
                    if out:
                        out += b","
                    run_from, run_base = start, len(out)
                result.starts.append(run_base + start - run_from)
                result.ends.append(run_base + end - run_from)
                run_end = end
                continue
            item, model, path, prefix_bytes = marked
            digest = chosen[index][1]
            group = groups.get(digest)
            if group is None:
                call = _warmup_params(_decoder.decode(item)["params"], path) if warmup else None
                group = groups[digest] = [model, 0, estimate_tokens(prefix_bytes), path, call]
            group[1] += 1
            if run_from >= 0:
                out += view[run_from:run_end]
                run_from = -1
            if out:
                out += b","
            result.starts.append(len(out))
            out += item
            result.ends.append(len(out))
        if not groups:
            return prepared, CachePlan(left_as_written=own)
        if run_from >= 0:
            out += view[run_from:run_end]
    finally:
        view.release()
    result.custom_ids = list(prepared.custom_ids)
    result.as_written = prepared.as_written
    result.requests_read = prepared.requests_read
    ranked = sorted(groups.items(), key=lambda g: (-g[1][1], g[1][0], g[0]))
    prefixes = tuple(
        SharedPrefix(model, f"{digest:016x}", count, tokens, path, call if rank < MAX_WARMUP_PREFIXES else None)
        for rank, (digest, (model, count, tokens, path, call)) in enumerate(ranked)
    )
    return result, CachePlan(prefixes, sum(p.requests for p in prefixes), own)


def _mark(item: bytes, block_index: int, minimums: Mapping[str, int]) -> tuple[bytes, str, str, int] | None:
    """`item` with the breakpoint on block `block_index`, or the nearest earlier block that takes one within
    the long-enough prefix: (the new item, the model, the block's path, the prefix's bytes); None if none can.
    """
    params = _item_decoder.decode(item).params
    units = list(_units(params))
    minimum = estimate_bytes_for(minimum_cacheable_tokens(params.model, minimums))
    prefix_bytes = sum(memoryview(unit.raw).nbytes for unit in units[: block_index + 1])
    for index, unit in reversed(list(enumerate(units[: block_index + 1]))):
        if prefix_bytes < minimum:
            return None
        raw = bytes(unit.raw)
        prefix_bytes -= len(raw)
        if raw[:1] == b'"':
            marked = b'[{"type":"text","text":' + raw + b"," + _MARK + b"}]"
        elif raw[:1] == b"{" and _block_decoder.decode(raw).type not in _UNMARKABLE:
            marked = raw[:-1] + b"," + _MARK + b"}"
        else:
            continue
        at = _find(item, raw)
        new_item = item[:at] + marked + item[at + len(raw) :]
        # The first copy of the block's bytes is the block itself unless an identical value comes first
        # (another key's): then the block read back unmarked, and the request is encoded again instead.
        if not _marked_at(new_item, len(units), index, marked):
            new_item = _encoded_with_mark(item, unit.path)
        return new_item, params.model, unit.path, prefix_bytes + len(raw)
    return None


def _find(item: bytes, raw: bytes) -> int:
    """Where `raw` first occurs in `item`: a short needle, then a compare (a 12 KB needle costs its
    preprocessing on every search).
    """
    head = raw[:64]
    at = item.find(head)
    while at >= 0 and not item.startswith(raw, at):
        at = item.find(head, at + 1)
    return at


def _marked_at(item: bytes, count: int, block_index: int, marked: bytes) -> bool:
    """Whether `item`'s block `block_index` (of `count`) is the `marked` one (a string became a list of it)."""
    try:
        units = list(_units(_item_decoder.decode(item).params))
    except (msgspec.DecodeError, RecursionError):
        return False
    expected = marked[1:-1] if marked[:1] == b"[" else marked
    return len(units) == count and bytes(units[block_index].raw) == expected


def _encoded_with_mark(item: bytes, path: str) -> bytes:
    """The rare road: `item` decoded, the breakpoint set on the block at `path`, and encoded again."""
    request = _decoder.decode(item)
    params = request["params"]
    section, _, rest = path.partition(".")
    name, _, index = section.partition("[")
    if name == "messages":
        container: Any = params["messages"][int(index[:-1])]
        key: Any = "content"
        if rest != "content":
            container, key = container["content"], int(rest[8:-1])
    elif index:
        container, key = params[name], int(index[:-1])
    else:
        container, key = params, name
    value = container[key]
    if isinstance(value, str):
        container[key] = [{"type": "text", "text": value, "cache_control": dict(CACHE_CONTROL)}]
    else:
        value["cache_control"] = dict(CACHE_CONTROL)
    return _encoder.encode(request)


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
