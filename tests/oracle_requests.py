"""A plain reference for what a valid batch request is: the rules of requests/schema.py, hand-written.

Only tests use it: tests/unit/requests/test_oracle.py runs the package's fast path (the msgspec
schema, block decodes and the per-line road) and this checker over the same cases and asserts they
agree. The package itself has one definition of the rules, the schema.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from typing import Any

CUSTOM_ID_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-")


def is_json(value: object) -> bool:
    """Whether `value` is something JSON can carry as it is (no NaN/inf, bytes, sets, non-str keys)."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_json(item) for key, item in value.items())
    return False


def valid_custom_id(custom_id: object) -> bool:
    """1-64 characters of letters, digits, '_' or '-'."""
    return isinstance(custom_id, str) and 1 <= len(custom_id) <= 64 and set(custom_id) <= CUSTOM_ID_CHARACTERS


def valid_message(message: object) -> bool:
    """A role of user or assistant and non-empty content (a string or a list of blocks)."""
    if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
        return False
    content = message.get("content")
    return isinstance(content, (str, list)) and len(content) > 0


def valid_params(params: Mapping[str, Any]) -> bool:
    """The Messages API params a batch accepts (model, max_tokens >= 1, messages; no streaming, no fast mode)."""
    model, max_tokens, messages = params.get("model"), params.get("max_tokens"), params.get("messages")
    if not isinstance(model, str) or not model:
        return False
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        return False
    if not isinstance(messages, list) or not messages or not all(valid_message(m) for m in messages):
        return False
    if "stream" in params and params["stream"] is not False:
        return False
    return "speed" not in params


def valid_request(request: object, defaults: Mapping[str, Any]) -> bool:
    """Whether one request (with the operator's defaults filled into what it leaves out) can be sent."""
    if not isinstance(request, Mapping) or set(request) - {"custom_id", "params"}:
        return False
    params = request.get("params")
    if not valid_custom_id(request.get("custom_id")) or not isinstance(params, Mapping):
        return False
    if not is_json(params):
        return False
    return valid_params({**defaults, **params})


def accepted(requests: list[object], defaults: Mapping[str, Any]) -> list[bool]:
    """Per request: valid on its own, and its custom_id not already taken by an earlier valid one."""
    seen: set[str] = set()
    verdicts = []
    for request in requests:
        ok = valid_request(request, defaults)
        if ok:
            custom_id = request["custom_id"]  # type: ignore[index]
            ok = custom_id not in seen
            seen.add(custom_id)
        verdicts.append(ok)
    return verdicts
