"""The emulator's wire formats: a create body's requests decoded as the API checks them, and each
result as the JSONL line the API serves. Pure: bytes and records in, bytes and objects out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_claude_batch.emulator.outcomes import RequestRecord
    from airflow_provider_claude_batch.emulator.store import Batch

CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_FINAL_CODES = {"succeeded": 0, "errored": 1, "canceled": 2, "expired": 3}
_FINAL_NAMES = tuple(_FINAL_CODES)


class ApiError(Exception):
    """An API error as the real service reports it: HTTP status plus `error.type` and message."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


_items_decoder = msgspec.json.Decoder(list[msgspec.Raw])


class _Body(msgspec.Struct):
    requests: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _Item(msgspec.Struct):
    custom_id: object = None
    params: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_body_decoder = msgspec.json.Decoder(_Body)
_item_decoder = msgspec.json.Decoder(_Item)


def _decode_requests(body: bytes | bytearray | memoryview, max_requests: int) -> list[msgspec.Raw]:
    try:
        parsed = _body_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_request_error", f"The request body is not valid JSON: {exc}") from None
    if parsed.requests is msgspec.UNSET:
        raise ApiError(400, "invalid_request_error", "requests: Field required")
    try:
        items = _items_decoder.decode(parsed.requests)
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_request_error", "requests: Input should be a valid list") from None
    if not items:
        raise ApiError(400, "invalid_request_error", "requests: List should have at least 1 item")
    if len(items) > max_requests:
        raise ApiError(
            400,
            "invalid_request_error",
            f"requests: List should have at most {max_requests} items, not {len(items)}",
        )
    return items


def _decode_item(raw: msgspec.Raw, index: int) -> tuple[str, bytes]:
    try:
        item = _item_decoder.decode(raw)
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_request_error", f"requests.{index}: Input should be an object") from None
    if not isinstance(item.custom_id, str):
        raise ApiError(400, "invalid_request_error", f"requests.{index}.custom_id: Field required (a string)")
    if not CUSTOM_ID_PATTERN.fullmatch(item.custom_id):
        raise ApiError(
            400,
            "invalid_request_error",
            f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
        )
    if item.params is msgspec.UNSET or not bytes(item.params).lstrip().startswith(b"{"):
        raise ApiError(400, "invalid_request_error", f"requests.{index}.params: Input should be an object")
    return item.custom_id, bytes(item.params)


_encoder = msgspec.json.Encoder()


def _result_lines(batch: Batch) -> Iterator[bytes]:
    codes = batch.final_codes()
    order = sorted(range(len(batch.records)), key=lambda i: batch.records[i].digest)
    for index in order:
        record = batch.records[index]
        yield _encoder.encode({"custom_id": record.custom_id, "result": _result(record, codes[index])}) + b"\n"


def _content(record: RequestRecord) -> list[dict[str, Any]]:
    """A reply's content: its text, or (structured output by a forced tool) the tool's call with the object."""
    if record.tool_name:
        call_id = f"toolu_emu_{record.digest:016x}"
        return [
            {"type": "tool_use", "id": call_id, "name": record.tool_name, "input": msgspec.Raw(record.text.encode())}
        ]
    return [{"type": "text", "text": record.text, "citations": None}]


def _result(record: RequestRecord, code: int) -> dict[str, Any]:
    kind = _FINAL_NAMES[code]
    if kind == "errored":
        return {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": record.error_type, "message": record.error_message},
                "request_id": None,
            },
        }
    if kind != "succeeded":
        return {"type": kind}
    cache_written = record.cache_write_5m + record.cache_write_1h
    return {
        "type": "succeeded",
        "message": {
            "id": f"msg_emu_{record.digest:016x}",
            "type": "message",
            "role": "assistant",
            "model": record.model,
            "content": _content(record),
            "stop_reason": record.stop_reason,
            "stop_sequence": None,
            "stop_details": None,
            "container": None,
            "usage": {
                "input_tokens": record.input_tokens,
                "output_tokens": record.output_tokens,
                "cache_creation_input_tokens": cache_written,
                "cache_read_input_tokens": record.cache_read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": record.cache_write_5m,
                    "ephemeral_1h_input_tokens": record.cache_write_1h,
                },
                "server_tool_use": None,
                "service_tier": "batch",
                "inference_geo": None,
            },
        },
    }
