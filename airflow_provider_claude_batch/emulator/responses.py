"""The emulator's answers as the API shapes them: JSON bodies, error envelopes with a request ID."""

from __future__ import annotations

import secrets
from typing import Any

import msgspec
from starlette.responses import Response

from airflow_provider_claude_batch.emulator.wire import ApiError

_encoder = msgspec.json.Encoder()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer."""
    return Response(_encoder.encode(payload), status_code=status, media_type="application/json", headers=headers)


def new_request_id() -> str:
    """A request ID shaped like the API's (`request-id` header and the envelope's `request_id`)."""
    return "req_emu_" + secrets.token_hex(12)


def error_response(
    status: int,
    error_type: str,
    message: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> Response:
    """The API's error envelope (`{"type": "error", "error": {...}, "request_id": ...}`) with its status."""
    request_id = new_request_id()
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error["details"] = details
    body = {"type": "error", "error": error, "request_id": request_id}
    return json_response(body, status, {"request-id": request_id, **(headers or {})})


def parse_limit(given: str) -> int:
    """A list route's `limit` query parameter, as an integer (its range is the route's own check)."""
    try:
        return int(given)
    except ValueError:
        raise ApiError(400, "invalid_request_error", "limit: Input should be a valid integer") from None
