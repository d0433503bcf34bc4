"""Emulated structured output: a deterministic object that fits a JSON schema (or, asked to, one that does not).

Pure. A request asks for structured output natively (``output_config.format``) or by forcing one
tool (``tool_choice`` naming a tool of ``tools``); `asked_schema` finds the schema either way and
`sample` builds an object from it: types, enums and consts, required and optional properties,
arrays within minItems/maxItems, nested objects and ``$ref``s, numbers within their bounds, strings
within their lengths. The same digest always gives the same object.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from airflow_provider_claude_batch.requests.structured import resolve as _resolve

_HINTS = re.compile(r"\{([^{}]*)\}\s*$")
_BOUNDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems"}
)
Form = Literal["native", "tool"]
_MASK = (1 << 64) - 1
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
_FORMATS = {
    "date-time": "2026-11-01T12:00:00Z",
    "date": "2026-11-01",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "someone@example.com",
    "hostname": "example.com",
    "uri": "https://example.com/",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


class _Format(msgspec.Struct):
    type: str = ""
    schema: dict[str, Any] | None = None


class _OutputConfig(msgspec.Struct):
    format: _Format | None = None


class _Tool(msgspec.Struct):
    name: str = ""
    input_schema: dict[str, Any] | None = None


class _ToolChoice(msgspec.Struct):
    type: str = ""
    name: str = ""


class _Asks(msgspec.Struct):
    output_config: _OutputConfig | None = None
    tools: list[_Tool] | None = None
    tool_choice: _ToolChoice | None = None


_asks_decoder = msgspec.json.Decoder(_Asks)


def asked_schema(params: bytes) -> tuple[Form, str, dict[str, Any]] | None:
    """The form, tool name ("" natively) and schema of the structured output `params` ask for, or None."""
    try:
        asks = _asks_decoder.decode(params)
    except msgspec.DecodeError:
        return None
    config = asks.output_config
    if config is not None and config.format is not None and config.format.type == "json_schema":
        return "native", "", config.format.schema or {}
    choice = asks.tool_choice
    if choice is not None and choice.type == "tool":
        for tool in asks.tools or ():
            if tool.name == choice.name:
                return "tool", tool.name, tool.input_schema or {}
    return None


def sample(schema: dict[str, Any], digest: int, *, valid: bool = True) -> Any:
    """A deterministic value that validates against `schema`; with ``valid=False``, an object that does not."""
    value = _value(schema, schema, digest, 0)
    if valid:
        return value
    return _broken(schema, value)


def _mix(digest: int, salt: int) -> int:
    return ((digest ^ (salt * 0x9E3779B97F4A7C15)) * 0xBF58476D1CE4E5B9 + salt) & _MASK


def _hinted(node: dict[str, Any]) -> dict[str, Any]:
    """`node` with the bounds its description spells out (a strict schema says ``{minimum: 0, maximum: 1}``
    in words, as keywords the API does not take): a model that reads them keeps to them.
    """
    found = _HINTS.search(str(node.get("description", "")))
    if found is None:
        return node
    bounds: dict[str, Any] = {}
    for part in found.group(1).split(", "):
        key, _, value = part.partition(": ")
        if key in _BOUNDS:
            try:
                bounds[key] = int(value)
            except ValueError:
                try:
                    bounds[key] = float(value)
                except ValueError:
                    continue
    return {**node, **bounds}


def _value(node: dict[str, Any], root: dict[str, Any], digest: int, depth: int) -> Any:
    node = _hinted(_resolve(node, root))
    if "const" in node:
        return node["const"]
    if isinstance(enum := node.get("enum"), list) and enum:
        return enum[digest % len(enum)]
    for key in ("anyOf", "oneOf"):
        if isinstance(variants := node.get(key), list) and variants:
            usable = [v for v in variants if _resolve(v, root).get("type") != "null"] or variants
            return _value(usable[digest % len(usable)], root, _mix(digest, 1), depth)
    if isinstance(parts := node.get("allOf"), list) and parts:
        merged: dict[str, Any] = {}
        for part in parts:
            merged |= _resolve(part, root)
        return _value(merged, root, digest, depth)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in node):
        properties = node.get("properties", {})
        return {
            name: _value(prop, root, _mix(digest, index + 2), depth + 1)
            for index, (name, prop) in enumerate(properties.items())
        }
    if kind == "array":
        fewest = int(node.get("minItems", 0))
        most = int(node.get("maxItems", max(fewest, 3)))
        count = max(fewest, min(most, 1 + digest % 3)) if depth < 6 else fewest
        items = node.get("items", {})
        return [_value(items, root, _mix(digest, index + 100), depth + 1) for index in range(count)]
    if kind == "integer":
        low, high = _bounds(node, integer=True)
        return int(low) + digest % (int(high - low) + 1)
    if kind == "number":
        low, high = _bounds(node, integer=False)
        return round(low + (high - low) * (digest % 1001) / 1000, 6)
    if kind == "boolean":
        return digest % 2 == 0
    if kind == "null":
        return None
    return _string(node, digest)


def _bounds(node: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    """The inclusive range a number must fall in (0..100 where the schema leaves it open)."""
    step: float = 1 if integer else 0.001
    low = node.get("minimum", node["exclusiveMinimum"] + step if "exclusiveMinimum" in node else None)
    high = node.get("maximum", node["exclusiveMaximum"] - step if "exclusiveMaximum" in node else None)
    if low is None:
        low = 0 if high is None or high >= 0 else high - 100
    if high is None:
        high = low + 100
    return float(low), float(high)


def _string(node: dict[str, Any], digest: int) -> str:
    if node.get("format") in _FORMATS:
        return _FORMATS[node["format"]]
    text = f"{_WORDS[digest % len(_WORDS)]}-{digest % 10_000:04d}"
    low = int(node.get("minLength", 0))
    high = int(node.get("maxLength", max(low, len(text))))
    return (text * (1 + low // max(1, len(text))))[: max(low, min(high, len(text)))]


def _broken(schema: dict[str, Any], value: Any) -> Any:
    """`value` made invalid: a required property dropped, else the first property of the wrong type."""
    root = _resolve(schema, schema)
    if not isinstance(value, dict):
        return {"unexpected": value}
    required = root.get("required") or []
    if required:
        return {k: v for k, v in value.items() if k != required[0]}
    if value:
        first = next(iter(value))
        wrong: Any = "not-a-number" if isinstance(value[first], int | float) else 12345
        return {**value, first: wrong}
    return {"unexpected": True}
