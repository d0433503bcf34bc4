"""Fold raw result lines into a flat table row, a failure row and running totals: pure and fast.

Each line is decoded into small msgspec structs that read only the fields the table needs (unknown
fields are passed over, so new API fields never break landing); the raw line itself is kept
elsewhere, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from airflow_provider_claude_batch.batch.pricing import Usage

RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
FAILED_TYPES = ("errored", "canceled", "expired")
LONG_PROMPT_TOKENS = 100_000
TABLE_COLUMNS = (
    "custom_id", "batch_id", "result_type", "text", "stop_reason", "model", "message_id",
    "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
    "cache_write_5m_tokens", "cache_write_1h_tokens", "web_search_requests", "web_fetch_requests",
    "service_tier", "error_type", "error_message",
)


class _CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class _ServerToolUse(msgspec.Struct):
    web_search_requests: int | None = None
    web_fetch_requests: int | None = None


class _Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None
    server_tool_use: _ServerToolUse | None = None
    service_tier: str | None = None


class _Block(msgspec.Struct):
    type: str = ""
    text: str | None = None


class _Message(msgspec.Struct):
    id: str = ""
    model: str = ""
    content: list[_Block] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    usage: _Usage = msgspec.field(default_factory=_Usage)


class _ErrorObject(msgspec.Struct):
    type: str = ""
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    type: str = ""
    message: str = ""
    error: _ErrorObject | None = None


class _Result(msgspec.Struct):
    type: str
    message: _Message | None = None
    error: _ErrorEnvelope | None = None


class _Line(msgspec.Struct):
    custom_id: str
    result: _Result


_decoder = msgspec.json.Decoder(_Line)
_encoder = msgspec.json.Encoder()


class MalformedResultError(ValueError):
    """A results line that is not the API's shape: landing stops rather than guess."""


@dataclass
class FoldedLine:
    custom_id: str
    result_type: str
    row: dict[str, Any]
    failed: bool


@dataclass
class Totals:
    """Counts and usage of everything folded so far (one batch, or all of them)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_TYPES, 0))
    error_types: dict[str, int] = field(default_factory=dict)
    usage_by_model: dict[str, Usage] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    @property
    def failed(self) -> int:
        return sum(self.counts[t] for t in FAILED_TYPES)

    def add(self, other: Totals) -> None:
        for kind, number in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + number
        for kind, number in other.error_types.items():
            self.error_types[kind] = self.error_types.get(kind, 0) + number
        for model, usage in other.usage_by_model.items():
            self.usage_by_model.setdefault(model, Usage()).add(usage)

    def usage_total(self) -> dict[str, int]:
        total = Usage()
        for usage in self.usage_by_model.values():
            total.add(usage)
        return {k: v for k, v in vars(total).items() if not k.startswith("long_prompt")}


def fold_line(line: bytes, batch_id: str, totals: Totals) -> FoldedLine:
    """One raw line to its table row, counted into `totals`."""
    try:
        parsed = _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise MalformedResultError(f"a result line of batch {batch_id} is not valid: {exc}") from None
    result = parsed.result
    kind = result.type
    totals.counts[kind] = totals.counts.get(kind, 0) + 1
    # Each row is one dict literal in TABLE_COLUMNS order: this runs once per result (100,000 per batch).
    if kind == "succeeded" and result.message is not None:
        row = _succeeded_row(parsed.custom_id, batch_id, result.message, totals)
    else:
        error_type: str | None = None
        message: str | None = None
        if kind == "errored":
            error_type, message = _error_of(result.error)
            totals.error_types[error_type] = totals.error_types.get(error_type, 0) + 1
        row = {
            "custom_id": parsed.custom_id, "batch_id": batch_id, "result_type": kind, "text": None,
            "stop_reason": None, "model": None, "message_id": None, "input_tokens": None, "output_tokens": None,
            "cache_creation_input_tokens": None, "cache_read_input_tokens": None, "cache_write_5m_tokens": None,
            "cache_write_1h_tokens": None, "web_search_requests": None, "web_fetch_requests": None,
            "service_tier": None, "error_type": error_type, "error_message": message,
        }
    return FoldedLine(parsed.custom_id, kind, row, kind in FAILED_TYPES)


def _succeeded_row(custom_id: str, batch_id: str, message: _Message, totals: Totals) -> dict[str, Any]:
    usage = message.usage
    write_5m = write_1h = 0
    if usage.cache_creation is not None:
        write_5m = usage.cache_creation.ephemeral_5m_input_tokens or 0
        write_1h = usage.cache_creation.ephemeral_1h_input_tokens or 0
    else:
        # No split reported: count every cache write at the 5-minute rate (an assumption).
        write_5m = usage.cache_creation_input_tokens or 0
    read = usage.cache_read_input_tokens or 0
    tools = usage.server_tool_use
    content = message.content
    if len(content) == 1:  # the usual reply: one text block, no join needed
        text = content[0].text if content[0].type == "text" and content[0].text is not None else ""
    else:
        text = "\n".join(b.text for b in content if b.type == "text" and b.text is not None)
    model_usage = totals.usage_by_model.get(message.model)
    if model_usage is None:
        model_usage = totals.usage_by_model[message.model] = Usage()
    model_usage.requests += 1
    model_usage.input_tokens += usage.input_tokens
    model_usage.output_tokens += usage.output_tokens
    model_usage.cache_write_5m_tokens += write_5m
    model_usage.cache_write_1h_tokens += write_1h
    model_usage.cache_read_tokens += read
    if usage.input_tokens + write_5m + write_1h + read > LONG_PROMPT_TOKENS:
        model_usage.long_prompt_input_tokens += usage.input_tokens
        model_usage.long_prompt_output_tokens += usage.output_tokens
    return {
        "custom_id": custom_id, "batch_id": batch_id, "result_type": "succeeded", "text": text,
        "stop_reason": message.stop_reason, "model": message.model, "message_id": message.id,
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0, "cache_read_input_tokens": read,
        "cache_write_5m_tokens": write_5m, "cache_write_1h_tokens": write_1h,
        "web_search_requests": (tools.web_search_requests or 0) if tools else 0,
        "web_fetch_requests": (tools.web_fetch_requests or 0) if tools else 0,
        "service_tier": usage.service_tier, "error_type": None, "error_message": None,
    }


def _error_of(envelope: _ErrorEnvelope | None) -> tuple[str, str]:
    """The error type sits at result.error.error.type; some documentation reads result.error.type."""
    if envelope is None:
        return "unknown", ""
    if envelope.error is not None:
        return envelope.error.type or "unknown", envelope.error.message
    return envelope.type or "unknown", envelope.message


def encode_row(row: dict[str, Any]) -> bytes:
    return _encoder.encode(row) + b"\n"


def encode_rows(rows: list[dict[str, Any]]) -> bytes:
    """Many rows as JSONL in one call: the same bytes as `encode_row` of each, joined."""
    return _encoder.encode_lines(rows)
