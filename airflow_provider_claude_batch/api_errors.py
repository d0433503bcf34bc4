"""Describe SDK errors for logs and messages without importing the SDK (duck-typed)."""

from __future__ import annotations


def retry_after(exc: BaseException) -> float | None:
    """The server's retry-after header, in seconds, if it sent one."""
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def describe_api_error(exc: BaseException) -> str:
    """Status, error type and request id: enough to find the call in the API's logs, and never the key."""
    status = getattr(exc, "status_code", None)
    request_id = getattr(exc, "request_id", None)
    kind = getattr(exc, "type", None) or type(exc).__name__
    parts = [str(status) if status else "network", str(kind)]
    if request_id:
        parts.append(f"request {request_id}")
    return " ".join(parts)
