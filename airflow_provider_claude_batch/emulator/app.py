"""The emulator's HTTP surface: the Batches API's routes, headers and error envelopes, plus
`/_emulator/*` control routes that tests use to move the clock, choose outcomes, inject faults
and count what clients did."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from airflow_provider_claude_batch.emulator.clock import rfc3339
from airflow_provider_claude_batch.emulator.faults import Fault, FaultPlan, tampered_results
from airflow_provider_claude_batch.emulator.outcomes import API_VERSIONS, OutcomePlanner, OutcomeRule
from airflow_provider_claude_batch.emulator.store import ApiError, BatchStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

    from starlette.requests import Request
    from starlette.types import Receive, Scope, Send

_encoder = msgspec.json.Encoder()
_RESULTS_CHUNK = 256 * 1024


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


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(payload), status_code=status, media_type="application/json", headers=headers)


def _request_id() -> str:
    return "req_emu_" + secrets.token_hex(12)


def _error(status: int, error_type: str, message: str, headers: dict[str, str] | None = None,
           details: dict[str, Any] | None = None) -> Response:
    request_id = _request_id()
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error["details"] = details
    body = {"type": "error", "error": error, "request_id": request_id}
    return _json(body, status, {"request-id": request_id, **(headers or {})})


class _HalfSentResponse(Response):
    """Send the headers and half of the body, then drop the connection: a lost response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise EmulatedConnectionDrop("response dropped on purpose")


class Emulator:
    """One emulated workspace: a store, a fault plan, and the Starlette app serving both."""

    def __init__(self, store: BatchStore | None = None) -> None:
        self.store = store or BatchStore()
        self.faults = FaultPlan()
        api = "/v1/messages/batches"
        self.app = Starlette(routes=[
            Route(api, self._create, methods=["POST"]),
            Route(api, self._list, methods=["GET"]),
            Route(api + "/{batch_id}", self._retrieve, methods=["GET"]),
            Route(api + "/{batch_id}", self._delete, methods=["DELETE"]),
            Route(api + "/{batch_id}/cancel", self._cancel, methods=["POST"]),
            Route(api + "/{batch_id}/results", self._results, methods=["GET"]),
            Route("/_emulator/state", self._state, methods=["GET"]),
            Route("/_emulator/clock", self._clock, methods=["POST"]),
            Route("/_emulator/config", self._config, methods=["GET", "POST"]),
            Route("/_emulator/outcomes", self._outcomes, methods=["POST"]),
            Route("/_emulator/faults", self._faults, methods=["POST", "DELETE"]),
            Route("/_emulator/reset", self._reset, methods=["POST"]),
        ])
        self.app.add_exception_handler(404, self._not_found)
        self.app.add_exception_handler(405, self._not_allowed)

    # ---- the common path of every API call --------------------------------------------------
    async def _serve(self, request: Request, endpoint: str,
                     handler: Callable[[Request, Fault | None], Awaitable[Response]]) -> Response:
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
                response = _error(exc.status, exc.error_type, exc.message)
        key = f"{endpoint} {response.status_code}"
        store.responses[key] = store.responses.get(key, 0) + 1
        if fault is not None and fault.kind == "lost_response":
            if fault.mode == "timeout":
                await asyncio.sleep(fault.delay_seconds)
                return response
            dropped = _HalfSentResponse(response.body, response.status_code)
            dropped.raw_headers = response.raw_headers
            return dropped
        response.headers.setdefault("request-id", _request_id())
        response.headers["anthropic-workspace-id"] = store.config.workspace_id
        return response

    def _fault_response(self, fault: Fault) -> Response:
        headers = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        details = {"error_code": fault.error_code} if fault.error_code else None
        return _error(fault.status, fault.error_type, f"emulated {fault.error_type}", headers, details)

    def _check_headers(self, request: Request) -> None:
        expected = self.store.config.api_key
        given = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if given is None and authorization.lower().startswith("bearer "):
            given = authorization[7:]
        if not given or (expected is not None and not secrets.compare_digest(given, expected)):
            raise ApiError(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if version not in API_VERSIONS:
            raise ApiError(400, "invalid_request_error",
                           f"anthropic-version: expected one of {API_VERSIONS}, got {version!r}")
        workspace = request.headers.get("anthropic-workspace-id")
        if workspace is not None and workspace != self.store.config.workspace_id:
            raise ApiError(403, "permission_error",
                           f"This credential cannot act in workspace {workspace!r}")

    @staticmethod
    def _base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # ---- Batches API ----------------------------------------------------------------------------
    async def _create(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            body = await self._read_body(request)
            batch = self.store.create(body, request.headers["anthropic-version"])
            del body
            return _json(self.store.describe(batch, self._base_url(request), just_created=True))
        return await self._serve(request, "create", handle)

    async def _read_body(self, request: Request) -> bytearray:
        """Read the body into one buffer sized up front: a 100k-request body is held once, not twice."""
        limit = self.store.config.max_body_bytes
        declared = int(request.headers.get("content-length") or 0)
        too_large = ApiError(413, "request_too_large", f"Request exceeds the maximum size of {limit} bytes")
        if declared > limit:
            async for _ in request.stream():
                pass
            raise too_large
        buffer = bytearray(declared)
        filled = 0
        async for chunk in request.stream():
            end = filled + len(chunk)
            if end > limit:
                raise too_large
            if end <= len(buffer):
                buffer[filled:end] = chunk
            else:
                buffer[filled:] = chunk
            filled = end
        del buffer[filled:]
        return buffer

    async def _retrieve(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            batch = self.store.get(request.path_params["batch_id"])
            return _json(self.store.describe(batch, self._base_url(request)))
        return await self._serve(request, "retrieve", handle)

    async def _list(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            query = request.query_params
            try:
                limit = int(query.get("limit", "20"))
            except ValueError:
                raise ApiError(400, "invalid_request_error", "limit: Input should be a valid integer") from None
            page = self.store.page(limit=limit, after_id=query.get("after_id"), before_id=query.get("before_id"))
            base = self._base_url(request)
            data = [self.store.describe(b, base) for b in page.pop("chosen")]
            return _json({"data": data, **page})
        return await self._serve(request, "list", handle)

    async def _cancel(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            batch = self.store.cancel(request.path_params["batch_id"])
            return _json(self.store.describe(batch, self._base_url(request)))
        return await self._serve(request, "cancel", handle)

    async def _delete(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            batch_id = request.path_params["batch_id"]
            self.store.delete(batch_id)
            return _json({"id": batch_id, "type": "message_batch_deleted"})
        return await self._serve(request, "delete", handle)

    async def _results(self, request: Request) -> Response:
        async def handle(request: Request, fault: Fault | None) -> Response:
            lines = tampered_results(self.store.results_lines(request.path_params["batch_id"]), fault)
            cut_after = fault.after_lines if fault is not None and fault.kind == "cut_stream" else None
            pause = fault.delay_seconds if fault is not None and fault.kind == "slow_stream" else 0.0
            return StreamingResponse(_chunked(lines, cut_after, pause), media_type="application/binary")
        return await self._serve(request, "results", handle)

    # ---- control routes -------------------------------------------------------------------------
    async def _state(self, request: Request) -> Response:
        with_ids = request.query_params.get("custom_ids", "true").lower() not in ("0", "false", "no")
        state = self.store.inspect(with_custom_ids=with_ids)
        state["faults_served"] = dict(self.faults.served)
        state["faults_pending"] = self.faults.pending()
        return _json(state)

    async def _clock(self, request: Request) -> Response:
        payload = await self._payload(request)
        try:
            if "advance_seconds" in payload:
                self.store.clock.advance(float(payload["advance_seconds"]))
            elif "set_epoch" in payload:
                self.store.clock.set(float(payload["set_epoch"]))
        except ValueError as exc:
            return _error(400, "invalid_request_error", str(exc))
        now = self.store.clock.now()
        return _json({"now": rfc3339(now), "epoch": now})

    async def _config(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.store.config.update(await self._payload(request))
            except ValueError as exc:
                return _error(400, "invalid_request_error", str(exc))
        config = {k: v for k, v in vars(self.store.config).items() if k != "api_key"}
        return _json(config)

    async def _outcomes(self, request: Request) -> Response:
        payload = await self._payload(request)
        try:
            rules = [OutcomeRule.from_dict(r) for r in payload.get("rules", [])]
        except (TypeError, ValueError) as exc:
            return _error(400, "invalid_request_error", str(exc))
        if payload.get("replace", True):
            self.store.planner = OutcomePlanner(rules)
        else:
            self.store.planner = OutcomePlanner([*self.store.planner.rules, *rules])
        return _json({"rules": len(self.store.planner.rules)})

    async def _faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        else:
            payload = await self._payload(request)
            try:
                new = [Fault.from_dict(f, self.store.clock.now()) for f in payload.get("faults", [])]
            except (TypeError, ValueError) as exc:
                return _error(400, "invalid_request_error", str(exc))
            for fault in new:
                self.faults.add(fault)
        return _json({"pending": self.faults.pending()})

    async def _reset(self, request: Request) -> Response:
        self.store.reset()
        self.faults = FaultPlan()
        return _json({"reset": True})

    @staticmethod
    async def _payload(request: Request) -> dict[str, Any]:
        body = await request.body()
        payload = msgspec.json.decode(body) if body else {}
        if not isinstance(payload, dict):
            raise ApiError(400, "invalid_request_error", "expected a JSON object")
        return payload

    @staticmethod
    async def _not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not_found_error", f"Not found: {request.method} {request.url.path}")

    @staticmethod
    async def _not_allowed(request: Request, exc: Exception) -> Response:
        return _error(405, "invalid_request_error", f"Method not allowed: {request.method} {request.url.path}")


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
