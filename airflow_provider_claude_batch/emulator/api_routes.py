"""The emulator's Messages API, token counting and Models API routes, beside the Batches API's in `app.py`.

A mixin of `Emulator`: each route runs through the emulator's common path (`_serve`: call counts,
faults, headers) and reads the same store (outcome rules, model catalogue, prompt cache).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import msgspec

from airflow_provider_claude_batch.emulator.messages import CUSTOM_ID_HEADER, answer_message
from airflow_provider_claude_batch.emulator.responses import error_response, json_response, parse_limit
from airflow_provider_claude_batch.emulator.tokens import count_request_problem, input_tokens
from airflow_provider_claude_batch.emulator.wire import ApiError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from airflow_provider_claude_batch.emulator.faults import Fault
    from airflow_provider_claude_batch.emulator.store import BatchStore

MESSAGES_BODY_LIMIT = 32_000_000  # the Messages API's own limit (a batch's is 256 MB)
COUNT_TOKENS_BODY_LIMIT = MESSAGES_BODY_LIMIT


class MessagesAndModelsRoutes:
    """`POST /v1/messages`, `POST /v1/messages/count_tokens`, `GET /v1/models` and `GET /v1/models/{id}`."""

    store: BatchStore
    messages_in_flight: int
    messages_answered: dict[str, int]

    if TYPE_CHECKING:

        async def _serve(
            self, request: Request, endpoint: str, handler: Callable[[Request, Fault | None], Awaitable[Response]]
        ) -> Response: ...

        async def _read_body(self, request: Request, limit: int | None = None) -> bytearray: ...

    # ---- Messages API -------------------------------------------------------------------------
    async def _messages(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            config = self.store.config
            if config.messages_max_in_flight and self.messages_in_flight >= config.messages_max_in_flight:
                return error_response(
                    429,
                    "rate_limit_error",
                    "emulated rate limit: too many Messages calls in flight",
                    {"retry-after": "1"},
                )
            custom_id = request.headers.get(CUSTOM_ID_HEADER)
            label = custom_id or "-"
            self.messages_answered[label] = self.messages_answered.get(label, 0) + 1
            self.messages_in_flight += 1
            try:
                body = bytes(await self._read_body(request, MESSAGES_BODY_LIMIT))
                version = request.headers["anthropic-version"]
                # What this call writes to the cache is readable once its answer goes out, not before:
                # calls in flight together all write the entry, as on the API.
                visit = self.store.cache_visit(hold_writes=True)
                message = answer_message(self.store.planner, body, custom_id, version, self.store.models, visit)
                await asyncio.sleep(config.messages_latency_seconds)
                self.store.cache.store(visit.held_writes or [])
            finally:
                self.messages_in_flight -= 1
            return json_response(message)

        return await self._serve(request, "messages", handle)

    # ---- token counting -------------------------------------------------------------------------
    async def _count_tokens(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            body = await self._read_body(request, COUNT_TOKENS_BODY_LIMIT)
            try:
                decoded = msgspec.json.decode(body)
            except msgspec.DecodeError as exc:
                raise ApiError(400, "invalid_request_error", f"the body is not valid JSON: {exc}") from None
            problem = count_request_problem(decoded)
            if problem is not None:
                raise ApiError(400, "invalid_request_error", problem)
            self._check_model(decoded["model"])
            return json_response({"input_tokens": input_tokens(body)})

        return await self._serve(request, "count_tokens", handle)

    def _check_model(self, model: str) -> None:
        """A model the catalogue does not know, or has retired, is a 404, as for Messages."""
        spec = self.store.models.resolve(model)
        if spec is None or spec.lifecycle == "retired":
            raise ApiError(404, "not_found_error", f"model: {model}" + (" has been retired" if spec else ""))

    # ---- Models API ---------------------------------------------------------------------------
    async def _list_models(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            query = request.query_params
            limit = parse_limit(query.get("limit", "20"))
            try:
                page = self.store.models.page(
                    limit=limit,
                    after_id=query.get("after_id"),
                    before_id=query.get("before_id"),
                    lifecycles=query.getlist("lifecycle[]") + query.getlist("lifecycle"),
                )
            except ValueError as exc:
                raise ApiError(400, "invalid_request_error", str(exc)) from None
            return json_response(page)

        return await self._serve(request, "models", handle)

    async def _retrieve_model(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            model_id = request.path_params["model_id"]
            spec = self.store.models.resolve(model_id)
            if spec is None:
                raise ApiError(404, "not_found_error", f"model: {model_id}")
            return json_response(self.store.models.describe(spec))

        return await self._serve(request, "models", handle)
