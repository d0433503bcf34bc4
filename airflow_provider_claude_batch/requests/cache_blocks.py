"""A prompt's blocks in the API's prefix order, the digests of its prefixes, and the splice that puts a
cache breakpoint on one: the block-level mechanics of `requests/caching.py`. Pure.

The prefix order is tools, then the system prompt (a string is one block), then each message's
content blocks; a block is kept as its raw JSON (msgspec's `Raw`, no copy), so hashing and splicing
work on the request's bytes as written.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CACHE_CONTROL = {"type": "ephemeral", "ttl": "1h"}  # batches can outlast the 5-minute TTL
_UNMARKABLE = ("thinking", "redacted_thinking")  # blocks the API refuses a cache_control on
_DIGEST_BYTES = 8


class _Message(msgspec.Struct, gc=False):
    role: str = ""
    content: msgspec.Raw = msgspec.Raw(b'""')


class _Params(msgspec.Struct, gc=False):
    model: str = ""
    tools: list[msgspec.Raw] | None = None
    system: msgspec.Raw = msgspec.Raw()  # (empty: absent; a Raw is never None)
    tool_choice: msgspec.Raw = msgspec.Raw()
    thinking: msgspec.Raw = msgspec.Raw()
    output_config: msgspec.Raw = msgspec.Raw()  # held by the cache key: requests differing in it share no entry
    messages: list[_Message] = []


class _Item(msgspec.Struct, gc=False):
    params: _Params


class _KeyedParams(_Params, gc=False):
    cache_control: msgspec.Raw = msgspec.Raw()  # the automatic mode: marks the last block


class _Marked(msgspec.Struct, gc=False):
    cache_control: msgspec.Raw = msgspec.Raw()


_item_decoder = msgspec.json.Decoder(_Item)
_keyed_decoder = msgspec.json.Decoder(_KeyedParams)
_marked_decoder = msgspec.json.Decoder(_Marked)
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


class Chains:
    """Digest chains of requests' prefixes; a big block seen before (the shared instruction) is compared,
    not hashed again (a memcmp is many times faster than a hash).
    """

    def __init__(self, minimum_bytes: Callable[[str], int]) -> None:
        self.minimum_bytes = minimum_bytes
        self.memo: dict[tuple[bytes, bytes, int, bytes], tuple[bytes, bytes]] = {}
        self.memo_bytes = 0

    def chain(self, item: bytes) -> tuple[str, int, list[int]] | None:
        """(model, index of the first block whose prefix is long enough, the digest of each such prefix)."""
        try:
            params = _item_decoder.decode(item).params
        except (msgspec.DecodeError, RecursionError):
            return None
        minimum = self.minimum_bytes(params.model)
        digest = _seed(params)
        size = 0
        first = -1
        digests: list[int] = []
        for index, unit in enumerate(_units(params)):
            block = memoryview(unit.raw)
            size += block.nbytes
            digest = self._next(digest, unit.tag, block)
            if size >= minimum:
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


def _seed(params: _Params) -> bytes:
    """The digest a prompt's chain starts from: what the cache key holds besides its blocks."""
    digest = hashlib.blake2b(params.model.encode(), digest_size=_DIGEST_BYTES).digest()
    if _present(params.output_config):
        digest = _digest(digest, b"O", memoryview(params.output_config))
    return digest


def _digest(previous: bytes, tag: bytes, block: memoryview | bytes) -> bytes:
    hasher = hashlib.blake2b(previous, digest_size=_DIGEST_BYTES)
    hasher.update(tag)
    hasher.update(block)
    return hasher.digest()


def first_breakpoint_key(params: bytes) -> bytes | None:
    """A digest of the prompt up to its first cache breakpoint, with the model and ``output_config`` (which
    the cache key holds); None without a breakpoint (or for params that do not decode).

    Requests with the same key write and read one cache entry, and an entry is readable only once the
    first response that writes it begins: calls sent together would each pay to write it.
    """
    try:
        decoded = _keyed_decoder.decode(params)
        digest = _seed(decoded)
        found = False
        for unit in _units(decoded):
            digest = _digest(digest, unit.tag, memoryview(unit.raw))
            found = True
            if _has_breakpoint(unit.raw):
                return digest
    except (msgspec.DecodeError, RecursionError):
        return None
    return digest if found and _present(decoded.cache_control) else None


def _has_breakpoint(raw: msgspec.Raw) -> bool:
    block = bytes(raw)
    return block[:1] == b"{" and b'"cache_control"' in block and _present(_marked_decoder.decode(block).cache_control)


def mark_block(
    item: bytes, block_index: int, minimum_bytes: Callable[[str], int]
) -> tuple[bytes, str, str, int] | None:
    """`item` with the breakpoint on block `block_index`, or the nearest earlier block that takes one within
    the long-enough prefix: (the new item, the model, the block's path, the prefix's bytes); None if none can.
    """
    params = _item_decoder.decode(item).params
    units = list(_units(params))
    minimum = minimum_bytes(params.model)
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


def warmup_params(params: dict[str, Any], block: str) -> dict[str, Any]:
    """A Messages call that writes the prefix up to `block` (its breakpoint set) and answers one token.

    It carries the requests' ``output_config`` (a structured output's format, effort): the cache key
    holds it, so a warm-up without it would write an entry the batch never reads.
    """
    call: dict[str, Any] = {"model": params["model"], "max_tokens": 1}
    if params.get("output_config") is not None:
        call["output_config"] = params["output_config"]
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
