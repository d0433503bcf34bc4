"""The one definition of a valid batch request: msgspec structs, checked by a typed decode in C.

A request is valid when `decoder(False)` accepts its JSON; nothing else in the package decides it.
A refused request is named by `refusal`, which reads msgspec's error (the field it stopped at and
whether the value was missing, of the wrong type or out of range) through one small table of
messages, so the user reads "params.max_tokens must be at least 1" rather than msgspec's words.

The same structs let a JSONL line be sent exactly as written: a typed decode keeps nothing but the
custom_id, and a whole block of lines is decoded in one call (`decode_lines`). As written means a
line's bytes without its newline (spacing and a CR included) are its request's item in the body.
Two things differ from re-encoding it: a repeated key reaches the API repeated (the decode saw its
last value), and a number beyond what Python's float or a 64-bit integer hold, in a field that is
not checked, is passed on rather than refused.
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Raw

# `_Absent` accepts no value at all: a key of this type must be left out.
_Absent = Annotated[str, Meta(min_length=1, max_length=0)]
_NonEmptyText = Annotated[str, Meta(min_length=1)]
_NonEmptyBlocks = Annotated[list[Raw], Meta(min_length=1)]
_CUSTOM_ID_CHARACTERS = string.ascii_letters + string.digits + "_-"
CUSTOM_ID_RULE = "custom_id must be 1-64 characters of letters, digits, '_' or '-'"
STREAM_RULE = "params.stream: streaming is not supported in batches"


class _Message(msgspec.Struct, gc=False):
    role: Literal["user", "assistant"]
    content: _NonEmptyText | _NonEmptyBlocks


class _Params(msgspec.Struct, gc=False):
    model: _NonEmptyText
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[_Message], Meta(min_length=1)]
    stream: bool = False  # batches do not stream (msgspec 0.19 has no Literal[False]: checked below)
    speed: _Absent = ""  # nor run in fast mode
    # Read (never checked here) for preflight, which knows what the API version and the model accept.
    temperature: object = msgspec.UNSET
    top_p: object = msgspec.UNSET
    top_k: object = msgspec.UNSET

    def __post_init__(self) -> None:
        if self.stream:
            raise ValueError(STREAM_RULE)


class _ParamsWithSystem(_Params, gc=False, kw_only=True):
    """When the operator gives a default system prompt, a line without one needs it filled in."""

    system: Raw


class Request(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A valid request: a custom_id and the Messages API params the batch runs it with."""

    custom_id: Annotated[str, Meta(min_length=1, max_length=64)]
    params: _Params

    def __post_init__(self) -> None:
        # The characters, in Python: a `pattern=` on the field costs a regex call per line, 3x this.
        if self.custom_id.strip(_CUSTOM_ID_CHARACTERS):
            raise ValueError(CUSTOM_ID_RULE)


class _RequestNeedingSystem(Request, gc=False, forbid_unknown_fields=True):
    params: _ParamsWithSystem  # a narrower params: a Struct field may be overridden


Decoded = Request | _RequestNeedingSystem
Params = _Params  # what a decoded request's params hold (read by requests/facts.py)
REQUEST_KEYS = Request.__struct_fields__
SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


def any_sampling(requests: Iterable[Params]) -> bool:
    """Whether any of these requests sets a sampling field: three attribute reads each, a tenth of the cost of
    searching a block's bytes for the three keys and far less than `sampling_of` of each.
    """
    unset = msgspec.UNSET
    for params in requests:
        if params.temperature is not unset or params.top_p is not unset or params.top_k is not unset:
            return True
    return False


def sampling_of(params: Params) -> dict[str, object] | None:
    """The sampling fields a request sets (None when it sets none): preflight checks them."""
    found = {name: value for name in SAMPLING_FIELDS if (value := getattr(params, name)) is not msgspec.UNSET}
    return found or None


@functools.cache
def decoder(system_required: bool) -> msgspec.json.Decoder[Decoded]:
    """The request decoder (its `decode_lines` takes a block of lines in one call).

    With `system_required`, a request without params.system is refused: the caller fills in the default.
    """
    request: type[Decoded] = _RequestNeedingSystem if system_required else Request
    return msgspec.json.Decoder(request)


# What each field's refusal says: one message, or (missing or of the wrong type, present but out of range).
_REASONS: dict[str, str | tuple[str, str]] = {
    "": "expected an object with custom_id and params, got {kind}",
    "custom_id": ("custom_id is missing or not a string", CUSTOM_ID_RULE),
    "params": "params is missing or not an object",
    "params.model": "params.model is missing (set it per request or with the operator's model=)",
    "params.max_tokens": (
        "params.max_tokens is missing or not an integer (set it per request or with max_tokens=)",
        "params.max_tokens must be at least 1 in a batch",
    ),
    "params.messages": ("params.messages is missing or not a list", "params.messages is empty"),
    "params.messages[]": "params.messages[{0}] needs a role of 'user' or 'assistant'",
    "params.messages[].role": "params.messages[{0}] needs a role of 'user' or 'assistant'",
    "params.messages[].content": "params.messages[{0}].content is missing or empty",
    "params.stream": "params.stream: streaming is not supported in batches",
    "params.speed": "params.speed: fast mode is not supported in batches",
}
_ERROR = re.compile(r"(?s)(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?")
_FIELD = re.compile(r"Object (?P<how>missing required|contains unknown) field `(?P<name>[^`]*)`")
_WRONG_TYPE = re.compile(r"Expected `[^`]*`, got ")
_INDEX = re.compile(r"\[(\d+)\]")


def refusal(error: msgspec.ValidationError, request: object) -> str:
    """Why the schema refused `request` (what was decoded, for the names msgspec's message leaves out)."""
    parts = _ERROR.fullmatch(str(error))
    what, path = (parts["what"], parts["path"] or "") if parts else (str(error), "")
    if what in (CUSTOM_ID_RULE, STREAM_RULE):
        return what
    field = _FIELD.fullmatch(what)
    if field and field["how"] == "contains unknown":
        given = request if isinstance(request, Mapping) else {}
        unexpected = sorted((key for key in given if key not in REQUEST_KEYS), key=str)
        return f"unexpected key(s) {unexpected}; a request has only custom_id and params"
    if field:
        path = f"{path}.{field['name']}"
    indexes = _INDEX.findall(path)
    reason = _REASONS.get(_INDEX.sub("[]", path).lstrip("."))
    if reason is None:  # (a field the table does not know: msgspec's own words)
        return f"{path.lstrip('.') or 'the request'}: {what}"
    if isinstance(reason, tuple):
        reason = reason[0] if field or _WRONG_TYPE.match(what) else reason[1]
    return reason.format(*indexes, kind=type(request).__name__)


def valid_utf8(data: bytes) -> bool:
    """Whether `data` is UTF-8, which the API needs of the whole body.

    A typed decode does not check the UTF-8 of what it skips or keeps raw (ASCII, the usual case, is
    one fast scan).
    """
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def not_json_reason(value: object, root: str = "params") -> str | None:
    """Where `value` (named `root`) holds something JSON has no form for, in input order; None if nothing.

    msgspec encodes such values as something else (NaN as null, a set as a list, bytes as base64, an
    int key as a string), so a Python request holding one would be sent changed. With `root=""` the
    keys of a mapping are the names. Iterative, so a deeply nested value is walked rather than ending
    in a RecursionError.
    """
    stack: list[tuple[str, object]] = [(root, value)]
    while stack:
        path, value = stack.pop()
        if value is None or isinstance(value, str | int):  # (bool is an int)
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                return f"{path} is {value!r}, and JSON has no NaN or infinity"
            continue
        if isinstance(value, Mapping):
            for key in value:
                if not isinstance(key, str):
                    return f"{path or 'the request'} has the key {key!r}, and JSON keys are strings"
            stack.extend((f"{path}.{key}" if path else key, value[key]) for key in reversed(list(value)))
            continue
        if isinstance(value, list | tuple):
            stack.extend((f"{path}[{index}]", value[index]) for index in reversed(range(len(value))))
            continue
        return f"{path} is a {type(value).__name__}; JSON holds only dicts, lists, strings, numbers, booleans and None"
    return None


def undecodable_reason(line: bytes, exc: Exception) -> str:
    """Why a line could not be decoded, with the byte and column for text that is not UTF-8."""
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deeply"
    if isinstance(exc, UnicodeDecodeError):
        try:  # msgspec's position is within one string; the line's is what the user can find
            line.decode()
        except UnicodeDecodeError as whole:
            return not_utf8_reason(line, whole)
    return f"not valid JSON: {exc}"


def not_utf8_reason(line: bytes, exc: UnicodeDecodeError) -> str:
    """A line's UTF-8 error as the user can find it: the byte and where it is in the line."""
    return (
        f"not valid UTF-8: byte 0x{line[exc.start]:02x} at byte {exc.start + 1} of the line "
        "(save the file as UTF-8; Latin-1 or Windows-1252 text looks like this)"
    )


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


MAX_CACHE_BREAKPOINTS = 4
CACHE_TTLS = ("5m", "1h")
CACHE_CONTROL_KEY = b'"cache_control"'


def cache_breakpoints(params: Mapping[str, object]) -> list[tuple[str, object]]:
    """Every `cache_control` of decoded params with where it is, in prefix order (tools, system,
    messages; a top-level one, the automatic mode, takes the last slot).
    """
    found: list[tuple[str, object]] = []

    def blocks(path: str, value: object) -> None:
        if isinstance(value, list):
            for index, block in enumerate(value):
                if isinstance(block, Mapping) and "cache_control" in block:
                    found.append((f"{path}[{index}]", block["cache_control"]))

    blocks("params.tools", params.get("tools"))
    blocks("params.system", params.get("system"))
    messages = params.get("messages")
    for index, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, Mapping):
            blocks(f"params.messages[{index}].content", message.get("content"))
    if "cache_control" in params:
        found.append(("params", params["cache_control"]))
    return found


def cache_control_problem(item: bytes | bytearray) -> str | None:
    """Why a request's own `cache_control` breakpoints would be refused by the API, or None.

    Checked before anything is spent (the API would refuse the batch's requests one by one after
    it ran): at most four breakpoints, each ``{"type": "ephemeral"}`` with a ``ttl`` of "5m" or
    "1h", and no 1-hour breakpoint after a 5-minute one. Only called on items holding the key.
    """
    try:
        request = msgspec.json.decode(item)
    except (msgspec.DecodeError, RecursionError):
        return None  # (the schema names what is wrong with it)
    params = request.get("params") if isinstance(request, dict) else None
    if not isinstance(params, Mapping):
        return None
    found = cache_breakpoints(params)
    if len(found) > MAX_CACHE_BREAKPOINTS:
        where = ", ".join(path for path, _ in found)
        return f"{len(found)} cache_control breakpoints ({where}); the API allows at most {MAX_CACHE_BREAKPOINTS}"
    five_minutes: str | None = None
    for path, control in found:
        if not isinstance(control, Mapping) or control.get("type") != "ephemeral":
            return f'{path}.cache_control must be {{"type": "ephemeral"}} (with an optional "ttl"), not {control!r}'
        ttl = control.get("ttl", "5m")
        if ttl not in CACHE_TTLS:
            return f"{path}.cache_control.ttl must be '5m' or '1h', not {ttl!r}"
        if ttl == "5m" and five_minutes is None:
            five_minutes = path
        elif ttl == "1h" and five_minutes is not None:
            return (
                f"{path}.cache_control has a 1h ttl after the 5m breakpoint at {five_minutes}; "
                "1-hour breakpoints must come before 5-minute ones"
            )
    return None
