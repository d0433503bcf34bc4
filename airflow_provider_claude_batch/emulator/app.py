"""The emulator's HTTP surface: the Batches API's routes, headers and error envelopes, plus
`/_emulator/*` control routes that tests use to move the clock, choose outcomes, inject faults
and count what clients did.

Safe to leave running on a developer's machine: bodies are read as they arrive (never allocated from
a declared Content-Length), a body that stops or trickles gets a 408, and the control routes take
only JSON from a caller holding the API key or the control token, so a web page cannot reach them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from airflow_provider_claude_batch.emulator.api_routes import MessagesAndModelsRoutes
from airflow_provider_claude_batch.emulator.clock import rfc3339
from airflow_provider_claude_batch.emulator.faults import Fault, FaultPlan, tampered_results
from airflow_provider_claude_batch.emulator.models import ModelCatalog, ModelSpec
from airflow_provider_claude_batch.emulator.outcomes import API_VERSIONS, OutcomePlanner, OutcomeRule
from airflow_provider_claude_batch.emulator.responses import error_response, json_response, new_request_id, parse_limit
from airflow_provider_claude_batch.emulator.store import Batch, BatchStore
from airflow_provider_claude_batch.emulator.wire import ApiError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

_encoder = msgspec.json.Encoder()
_RESULTS_CHUNK = 256 * 1024
CONTROL_BODY_LIMIT = 1_000_000
MAX_CREATED_AT_ONCE = 100_000


class EmulatedConnectionDrop(Exception):
    """Raised on purpose to make the server drop a connection mid-response."""


class _DropFilter(logging.Filter):
    """Keep deliberate connection drops out of the server's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, EmulatedConnectionDrop):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


logging.getLogger("uvicorn.error").addFilter(_DropFilter())


class _HalfSentResponse(Response):
    """Send the headers and half of the body, then drop the connection: a lost response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise EmulatedConnectionDrop("response dropped on purpose")


class Emulator(MessagesAndModelsRoutes):
    """One emulated workspace: a store, a fault plan, and the Starlette app serving both."""

    def __init__(self, store: BatchStore | None = None, control_token: str | None = None) -> None:
        self.store = store or BatchStore()
        self.faults = FaultPlan()
        self.control_token = control_token
        self.messages_in_flight = 0
        self.messages_answered: dict[str, int] = {}  # Messages calls received, per custom_id label
        api = "/v1/messages/batches"
        control = self._control
        self.app = Starlette(
            routes=[
                Route(api, self._create, methods=["POST"]),
                Route(api, self._list, methods=["GET"]),
                Route(api + "/{batch_id}", self._retrieve, methods=["GET"]),
                Route(api + "/{batch_id}", self._delete, methods=["DELETE"]),
                Route(api + "/{batch_id}/cancel", self._cancel, methods=["POST"]),
                Route(api + "/{batch_id}/results", self._results, methods=["GET"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/v1/models", self._list_models, methods=["GET"]),
                Route("/v1/models/{model_id:path}", self._retrieve_model, methods=["GET"]),
                Route("/_emulator/state", control(self._state), methods=["GET"]),
                Route("/_emulator/clock", control(self._clock), methods=["POST"]),
                Route("/_emulator/config", control(self._config), methods=["GET", "POST"]),
                Route("/_emulator/outcomes", control(self._outcomes), methods=["POST"]),
                Route("/_emulator/faults", control(self._faults), methods=["POST", "DELETE"]),
                Route("/_emulator/reset", control(self._reset), methods=["POST"]),
                Route("/_emulator/models", control(self._models), methods=["GET", "POST"]),
                Route("/_emulator/batches", control(self._create_many), methods=["POST"]),
            ]
        )
        self.app.add_exception_handler(404, self._not_found)
        self.app.add_exception_handler(405, self._not_allowed)

    # ---- the common path of every API call --------------------------------------------------
    async def _serve(
        self, request: Request, endpoint: str, handler: Callable[[Request, Fault | None], Awaitable[Response]]
    ) -> Response:
        store = self.store
        store.calls[endpoint] = store.calls.get(endpoint, 0) + 1
        fault = self.faults.take(endpoint, store.clock.now())
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.delay_seconds)
            fault = None
        if fault is not None and fault.kind == "status":
            response = self._fault_response(fault)
        else:
            try:
                self._check_headers(request)
                response = await handler(request, fault)
            except ApiError as exc:
                response = error_response(exc.status, exc.error_type, exc.message)
        key = f"{endpoint} {response.status_code}"
        store.responses[key] = store.responses.get(key, 0) + 1
        if fault is not None and fault.kind == "lost_response":
            if fault.mode == "timeout":
                await asyncio.sleep(fault.delay_seconds)
                return response
            dropped = _HalfSentResponse(response.body, response.status_code)
            dropped.raw_headers = response.raw_headers
            return dropped
        response.headers.setdefault("request-id", new_request_id())
        response.headers["anthropic-workspace-id"] = store.config.workspace_id
        return response

    def _fault_response(self, fault: Fault) -> Response:
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        details = {"error_code": fault.error_code} if fault.error_code else None
        return error_response(fault.status, fault.error_type, f"emulated {fault.error_type}", headers, details)

    def _check_headers(self, request: Request) -> None:
        expected = self.store.config.api_key
        given = _credential(request)
        if not given or (expected is not None and not secrets.compare_digest(given, expected)):
            raise ApiError(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if version not in API_VERSIONS:
            raise ApiError(
                400, "invalid_request_error", f"anthropic-version: expected one of {API_VERSIONS}, got {version!r}"
            )
        workspace = request.headers.get("anthropic-workspace-id")
        if workspace is not None and workspace != self.store.config.workspace_id:
            raise ApiError(403, "permission_error", f"This credential cannot act in workspace {workspace!r}")

    @staticmethod
    def _base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # ---- Batches API ----------------------------------------------------------------------------
    async def _create(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            body = await self._read_body(request)
            batch = self.store.create(body, request.headers["anthropic-version"])
            del body
            return json_response(self.store.describe(batch, self._base_url(request), just_created=True))

        return await self._serve(request, "create", handle)

    async def _read_body(self, request: Request, limit: int | None = None) -> bytearray:
        """The body as it arrives, never allocated from the declared Content-Length (a client can
        declare 200 MB and send nothing); one buffer grown in place, so a 100k-request body is held once.

        Over `limit` → 413 (a declared oversize is drained, not stored, so the client reads the answer);
        a body that stops or trickles → 408, and the other connections are served meanwhile.
        """
        config = self.store.config
        limit = config.max_body_bytes if limit is None else limit
        declared = request.headers.get("content-length")
        oversize = declared is not None and declared.isdigit() and int(declared) > limit
        buffer = bytearray()
        try:
            async for chunk in _timed(request.stream(), config.body_idle_seconds, config.body_total_seconds):
                if oversize:
                    continue
                if len(buffer) + len(chunk) > limit:
                    oversize = True
                    break
                buffer += chunk
        except ClientDisconnect:
            raise ApiError(400, "invalid_request_error", "the client went away before sending the whole body") from None
        if oversize:
            raise ApiError(413, "request_too_large", f"Request exceeds the maximum size of {limit} bytes")
        return buffer

    async def _retrieve(self, request: Request) -> Response:
        return await self._serve(request, "retrieve", self._describing(self.store.get))

    async def _list(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            query = request.query_params
            limit = parse_limit(query.get("limit", "20"))
            page = self.store.page(limit=limit, after_id=query.get("after_id"), before_id=query.get("before_id"))
            base = self._base_url(request)
            data = [self.store.describe(b, base) for b in page.pop("chosen")]
            return json_response({"data": data, **page})

        return await self._serve(request, "list", handle)

    async def _cancel(self, request: Request) -> Response:
        return await self._serve(request, "cancel", self._describing(self.store.cancel))

    def _describing(self, action: Callable[[str], Batch]) -> Callable[[Request, Fault | None], Awaitable[Response]]:
        """A handler that applies `action` to the path's batch and answers with the batch as it then is."""

        async def handle(request: Request, fault: Fault | None) -> Response:
            batch = action(request.path_params["batch_id"])
            return json_response(self.store.describe(batch, self._base_url(request)))

        return handle

    async def _delete(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            batch_id = request.path_params["batch_id"]
            self.store.delete(batch_id)
            return json_response({"id": batch_id, "type": "message_batch_deleted"})

        return await self._serve(request, "delete", handle)

    async def _results(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            lines = tampered_results(self.store.results_lines(request.path_params["batch_id"]), fault)
            cut_after = fault.after_lines if fault is not None and fault.kind == "cut_stream" else None
            pause = fault.delay_seconds if fault is not None and fault.kind == "slow_stream" else 0.0
            return StreamingResponse(_chunked(lines, cut_after, pause), media_type="application/binary")

        return await self._serve(request, "results", handle)

    # ---- control routes -------------------------------------------------------------------------
    def _control(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Guard a control route: the API key or the control token, JSON bodies only, and any malformed
        input answered 400 (a bad value is refused before it is stored, so it cannot break later calls).
        """

        async def endpoint(request: Request) -> Response:
            try:
                self._check_control(request)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc.status, exc.error_type, exc.message)
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError, re.error) as exc:
                return error_response(400, "invalid_request_error", f"malformed control input: {exc}")

        return endpoint

    def _check_control(self, request: Request) -> None:
        given = _credential(request)
        accepted = [v for v in (self.control_token, self.store.config.api_key) if v]
        if not given or not any(secrets.compare_digest(given.encode(), v.encode()) for v in accepted):
            raise ApiError(
                401, "authentication_error", "control routes need the emulator's API key or control token in x-api-key"
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method != "GET" and content_type != "application/json":
            raise ApiError(415, "invalid_request_error", "control routes take application/json only")

    async def _state(self, request: Request) -> Response:
        with_ids = request.query_params.get("custom_ids", "true").lower() not in ("0", "false", "no")
        state = self.store.inspect(with_custom_ids=with_ids)
        state["faults_served"] = dict(self.faults.served)
        state["faults_pending"] = self.faults.pending()
        state["messages_answered"] = dict(self.messages_answered)
        return json_response(state)

    async def _clock(self, request: Request) -> Response:
        payload = await self._payload(request)
        if "advance_seconds" in payload:
            self.store.clock.advance(_number(payload, "advance_seconds"))
        elif "set_epoch" in payload:
            self.store.clock.set(_number(payload, "set_epoch"))
        now = self.store.clock.now()
        return json_response({"now": rfc3339(now), "epoch": now})

    async def _config(self, request: Request) -> Response:
        if request.method == "POST":
            self.store.config.update(await self._payload(request))
        config = {k: v for k, v in vars(self.store.config).items() if k != "api_key"}
        return json_response(config)

    async def _outcomes(self, request: Request) -> Response:
        payload = await self._payload(request)
        rules = [OutcomeRule.from_dict(_typed(OutcomeRule, r)) for r in _items(payload, "rules")]
        if payload.get("replace", True):
            self.store.planner = OutcomePlanner(rules)
        else:
            self.store.planner = OutcomePlanner([*self.store.planner.rules, *rules])
        return json_response({"rules": len(self.store.planner.rules)})

    async def _faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        else:
            payload = await self._payload(request)
            now = self.store.clock.now()
            new = [Fault.from_dict(_typed(Fault, f, extra=("for_seconds",)), now) for f in _items(payload, "faults")]
            for fault in new:
                self.faults.add(fault)
        return json_response({"pending": self.faults.pending()})

    async def _reset(self, request: Request) -> Response:
        self.store.reset()
        self.faults = FaultPlan()
        self.messages_answered.clear()
        return json_response({"reset": True})

    async def _models(self, request: Request) -> Response:
        if request.method == "POST":
            payload = await self._payload(request)
            specs = [ModelSpec.from_dict(m) for m in _items(payload, "models")]
            if payload.get("replace", False):
                self.store.models = ModelCatalog(specs)
            else:
                self.store.models.add(specs)
        return json_response({"models": [s.id for s in self.store.models.ordered()]})

    async def _create_many(self, request: Request) -> Response:
        """`count` batches from one create body's `requests`, made as a create makes them (a load test's setup)."""
        payload = await self._payload(request)
        count = payload.get("count")
        if type(count) is not int or not 1 <= count <= MAX_CREATED_AT_ONCE:
            raise ValueError(f"count must be a whole number from 1 to {MAX_CREATED_AT_ONCE:,}")
        body = msgspec.json.encode({"requests": payload.get("requests")})
        version = API_VERSIONS[0]
        return json_response({"ids": [self.store.create(body, version).id for _ in range(count)]})

    async def _payload(self, request: Request) -> dict[str, Any]:
        body = await self._read_body(request, CONTROL_BODY_LIMIT)
        payload = msgspec.json.decode(body) if body else {}
        if not isinstance(payload, dict):
            raise ApiError(400, "invalid_request_error", "expected a JSON object")
        return payload

    @staticmethod
    async def _not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not_found_error", f"Not found: {request.method} {request.url.path}")

    @staticmethod
    async def _not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, "invalid_request_error", f"Method not allowed: {request.method} {request.url.path}")


def _credential(request: Request) -> str | None:
    """The key a client sent, as `x-api-key` or as a bearer token."""
    given = request.headers.get("x-api-key")
    authorization = request.headers.get("authorization", "")
    if given is None and authorization.lower().startswith("bearer "):
        given = authorization[7:]
    return given


def _number(payload: dict[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def _items(payload: dict[str, Any], name: str) -> list[dict[str, Any]]:
    items = payload.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{name} must be a list of JSON objects")
    return items


def _typed(cls: type, raw: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """`raw` unchanged once its known fields have the types `cls` declares (a string where a count
    belongs would otherwise be stored and fail every later call); unknown fields are left for
    `from_dict` to name.
    """
    known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}  # type: ignore[attr-defined]
    msgspec.convert(known, cls)
    for name in extra:
        if name in raw:
            _number(raw, name)
    return raw


async def _timed(stream: AsyncIterator[bytes], idle_seconds: float, total_seconds: float) -> AsyncIterator[bytes]:
    """The chunks of `stream`, or a 408 once none arrived for `idle_seconds` or all took over `total_seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_seconds
    iterator = aiter(stream)

    async def next_chunk() -> bytes:
        return await anext(iterator)

    while True:
        try:
            chunk = await asyncio.wait_for(next_chunk(), max(0.0, min(idle_seconds, deadline - loop.time())))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise ApiError(
                408,
                "timeout_error",
                f"the request body did not arrive in time (no bytes for "
                f"{idle_seconds:g} s, or more than {total_seconds:g} s in all)",
            ) from None
        yield chunk


async def _chunked(lines: Iterator[bytes], cut_after: int | None, pause: float = 0.0) -> AsyncIterator[bytes]:
    """Batch lines into large chunks; yield control between chunks so other calls are served."""
    buffer = bytearray()
    for count, line in enumerate(lines):
        if cut_after is not None and count >= cut_after:
            if buffer:
                yield bytes(buffer)
            raise EmulatedConnectionDrop("results stream cut on purpose")
        buffer += line
        if len(buffer) >= _RESULTS_CHUNK:
            yield bytes(buffer)
            buffer.clear()
            await asyncio.sleep(pause)
    if buffer:
        yield bytes(buffer)
