"""Which JSONL request lines can be sent exactly as written: typed decoding in C, no Python per line.

Decoding every line into Python objects, checking them and encoding them again was most of the time
spent before an upload (100k requests, 114 MB: about 1.4 s against a 3.5 s upload). A line that a
typed msgspec decode accepts carries everything the checks in `requests.check_params` ask for, so it
can be sent as written: a whole block of such lines is decoded in one call (`decode_lines`), and
nothing is built per line but its custom_id. Anything this decode refuses (a missing field a
default must fill, a bad value, a blank line) takes the per-line road, which decides and names it.

As written means: a line's bytes without its newline (spacing and a CR included) are its request's
item in the body, not a re-encoding of the values in it. Two things differ from re-encoding: a
repeated key reaches the API repeated (the checks saw its last value), and a number beyond what
Python's float or a 64-bit integer hold, in a field that is not checked, is passed on rather than
refused.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Raw

# What a line may be sent as written with. A value the API would refuse fails the decode, and so
# does a key the checks do not allow: `_Absent` accepts no value at all, so the key must be left out.
_Absent = Annotated[str, Meta(min_length=1, max_length=0)]
_NonEmptyText = Annotated[str, Meta(min_length=1)]
_NonEmptyBlocks = Annotated[list[Raw], Meta(min_length=1)]
_CustomId = Annotated[str, Meta(min_length=1, max_length=64)]  # its characters: `plain_custom_ids`


class _Message(msgspec.Struct, gc=False):
    role: Literal["user", "assistant"]
    content: _NonEmptyText | _NonEmptyBlocks


class _Params(msgspec.Struct, gc=False):
    model: _NonEmptyText
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[_Message], Meta(min_length=1)]
    stream: bool = False  # must be false: `accepted_custom_ids` (Literal[False] needs msgspec 0.20)
    speed: _Absent = ""


class _ParamsWithSystem(_Params, gc=False, kw_only=True):
    """When the operator gives a default system prompt, a line without one needs it filled in."""

    system: Raw


class _Request(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    custom_id: _CustomId
    params: _Params


class _RequestNeedingSystem(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    custom_id: _CustomId
    params: _ParamsWithSystem


Decoded = _Request | _RequestNeedingSystem

_CUSTOM_ID_CHARS = re.compile(r"[a-zA-Z0-9_-]*")


@functools.cache
def decoder(system_required: bool) -> msgspec.json.Decoder[Decoded]:
    """A request's decoder; its `decode_lines` takes a block of lines in one call."""
    request: type[Decoded] = _RequestNeedingSystem if system_required else _Request
    return msgspec.json.Decoder(request)


def accepted_custom_ids(requests: list[Decoded]) -> list[str]:
    """The custom_ids of the requests that do not ask to stream: shorter than `requests` if any does."""
    return [request.custom_id for request in requests if not request.params.stream]


def plain_custom_ids(custom_ids: list[str]) -> bool:
    """All of them letters, digits, '_' or '-' (their lengths are checked by the decode): one C call."""
    return _CUSTOM_ID_CHARS.fullmatch("".join(custom_ids)) is not None


def valid_utf8(data: bytes) -> bool:
    """A typed decode does not check the UTF-8 of what it skips or keeps raw, and the API would refuse
    the whole body for one bad byte: checked here (ASCII, the usual case, in one fast scan).
    """
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def object_lines(part: bytes) -> list[int] | None:
    """Where the newlines of `part` are, if each of its lines starts with '{' and ends with '}'; else None.

    Then no line is blank and no value runs over a line end (after a '}' at a line's end, a '{'
    can only start a new value), so `decode_lines` giving one value per line means one request
    per line. A `find` loop: cheaper here than `count`, `split` or a regex.
    """
    if part[:1] != b"{" or part[-1:] != b"}":
        return None
    found: list[int] = []
    append, find = found.append, part.find
    at = find(b"\n")
    while at >= 0:  # (never at either end: those are '{' and '}')
        if part[at - 1] != 125 or part[at + 1] != 123:  # '}', '{'
            return None
        append(at)
        at = find(b"\n", at + 1)
    return found
