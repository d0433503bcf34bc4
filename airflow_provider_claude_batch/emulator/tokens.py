"""The emulator's one token count: what `POST /v1/messages/count_tokens` answers and what a batch
result reports as its input tokens, so a preflight estimate can be checked against usage exactly.

A request's input tokens are a quarter of the bytes of its messages, system prompt and tools written
as compact JSON (whitespace between tokens dropped), at least 1: the same request counts the same
whether it came in a batch body as written or re-encoded by the SDK for the counting call.
"""

from __future__ import annotations

import msgspec

# The body fields the real counting endpoint takes (SDK 2.16 `message_count_tokens_params.py`); any
# other (max_tokens, temperature, stop_sequences, metadata, ...) gets 400 "Extra inputs are not permitted".
COUNT_TOKENS_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config", "speed", "cache_control"}
)
BYTES_PER_TOKEN = 4


class Counted(msgspec.Struct):
    """The parts of a Messages body that are counted; everything else is passed over unread."""

    messages: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    system: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    tools: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_decoder = msgspec.json.Decoder(Counted)


def input_tokens(params: bytes | bytearray | memoryview) -> int:
    """The input tokens of a Messages body (a batch request's params, or a counting call's body)."""
    return tokens_of(_decoder.decode(params))


def tokens_of(counted: Counted) -> int:
    """The input tokens of a decoded body (the emulator's batch planner decodes its own subclass)."""
    size = sum(
        len(msgspec.json.format(part, indent=-1))
        for part in (counted.messages, counted.system, counted.tools)
        if part is not msgspec.UNSET
    )
    return max(1, size // BYTES_PER_TOKEN)


def count_request_problem(body: object) -> str | None:
    """Why the counting endpoint refuses `body` (a 400 `invalid_request_error`), or None.

    The model itself is checked against the catalog by the caller (404 for an unknown one).
    """
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    extra = sorted(key for key in body if key not in COUNT_TOKENS_FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list):
        return "messages: Field required"
    if not messages:
        return "messages: at least one message is required"
    return None
