"""The emulator's Messages API (`POST /v1/messages`): one request answered at once, at the standard price.

It reads and writes the same prompt cache as the workspace's batches, and always hits an entry it finds.

The same outcome rules and checks as a batch's requests (a rule's `times` counts across batches and
Messages calls, so a request can fail in its batch and succeed when sent on its own), but answered
synchronously: a problem in the params is a 4xx, an `errored` rule the error status the real API
sends for that type. Rules match the custom_id a caller labels its call with
(`x-claude-batch-custom-id`; the real API ignores the header). Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.emulator.wire import _FINAL_CODES, CUSTOM_ID_PATTERN, ApiError
from airflow_provider_claude_batch.emulator.wire import _result as result_object

if TYPE_CHECKING:
    from airflow_provider_claude_batch.emulator.models import ModelCatalog
    from airflow_provider_claude_batch.emulator.outcomes import CacheVisit, OutcomePlanner

CUSTOM_ID_HEADER = "x-claude-batch-custom-id"
UNLABELLED = "messages-call"
STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def answer_message(
    planner: OutcomePlanner,
    params: bytes,
    custom_id: str | None,
    api_version: str,
    models: ModelCatalog | None = None,
    cache: CacheVisit | None = None,
) -> dict[str, Any]:
    """The Message for one Messages call, or an `ApiError` the route answers with (`models`: the
    workspace's catalogue, which the model is checked against as in a batch).

    `stream: true` is refused (the emulator answers whole messages only); an `expired` rule means
    nothing for a call answered at once, so it succeeds.
    """
    if custom_id is not None and not CUSTOM_ID_PATTERN.fullmatch(custom_id):
        raise ApiError(400, "invalid_request_error", f"{CUSTOM_ID_HEADER}: must match ^[a-zA-Z0-9_-]{{1,64}}$")
    if b'"stream":true' in params.replace(b" ", b""):
        raise ApiError(400, "invalid_request_error", "stream: the emulator answers whole messages only")
    record = planner.plan(custom_id or UNLABELLED, params, api_version, models, cache)
    if record.outcome == "errored":
        raise ApiError(STATUS_BY_ERROR_TYPE.get(record.error_type, 500), record.error_type, record.error_message)
    if record.outcome == "expired":
        record = planner._succeeded(record.custom_id, params, record.digest, None, cache)
    message: dict[str, Any] = result_object(record, _FINAL_CODES["succeeded"])["message"]
    message["usage"]["service_tier"] = "standard"
    return message


__all__ = ["CUSTOM_ID_HEADER", "STATUS_BY_ERROR_TYPE", "answer_message"]
