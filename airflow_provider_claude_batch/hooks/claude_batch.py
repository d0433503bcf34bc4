"""`ClaudeBatchHook`: an Airflow connection turned into the official SDK's clients.

The SDK is imported only when a client is built, never when this module is imported, so DAG files
that use our operators parse fast. Workers get the sync client; triggers get the async client
(one per connection in a triggerer's event loop, shared by its triggers and closed by the last).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch._compat import BaseHook, aget_connection
from airflow_provider_claude_batch.hooks.api_errors import (
    describe_api_error,
    mask_secrets,
    same_origin,
    secret_shaped_parts,
    show_origin,
)
from airflow_provider_claude_batch.hooks.client_settings import CONN_TYPE, ClientSettings, check_proxy_support

if TYPE_CHECKING:
    import ssl
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    import httpx2
    from anthropic import Anthropic, AsyncAnthropic
    from anthropic.pagination import SyncPage
    from anthropic.types.messages import DeletedMessageBatch, MessageBatch

    from airflow_provider_claude_batch.hooks.client_settings import ConnectionLike
    from airflow_provider_claude_batch.preflight.models import ModelInfo

BATCHES_PATH = "/v1/messages/batches"
MODELS_PATH = "/v1/models"
MESSAGES_PATH = "/v1/messages"
# Labels a Messages call with the request's custom_id, so the API's logs and the emulator can tell calls apart.
CUSTOM_ID_HEADER = "x-claude-batch-custom-id"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
# Model IDs and aliases as the API spells them; anything else never reaches a request path.
MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")
DEFAULT_BASE_URL = "https://api.anthropic.com"
RESULTS_CHUNK_BYTES = 1024 * 1024


class BatchNotEndedError(RuntimeError):
    """Results were asked for before the batch ended: the API has none yet."""


def build_client(settings: ClientSettings) -> Anthropic:
    """The SDK's sync client for these settings (imports the SDK)."""
    import anthropic

    return anthropic.Anthropic(**_client_kwargs(settings, anthropic.DefaultHttpxClient))


def build_async_client(settings: ClientSettings) -> AsyncAnthropic:
    """The SDK's async client for these settings (imports the SDK)."""
    import anthropic

    return anthropic.AsyncAnthropic(**_client_kwargs(settings, anthropic.DefaultAsyncHttpxClient))


def _client_kwargs(settings: ClientSettings, http_client_class: Any) -> dict[str, Any]:
    import anthropic

    check_proxy_support(settings.proxy)
    proxy = {"proxy": settings.proxy} if settings.proxy else {}
    return {
        "api_key": settings.api_key.reveal() if settings.api_key else None,
        "base_url": settings.base_url,
        "timeout": anthropic.Timeout(settings.timeout, connect=min(settings.timeout, 10.0)),
        "max_retries": settings.max_retries,
        "default_headers": settings.default_headers or None,
        # The SDK's own HTTP client class and defaults, with one TLS context for the whole process. Not
        # following redirects: on a hop to another origin the HTTP library strips only `Authorization`,
        # so `x-api-key` would go wherever a redirect pointed (the API answers without redirects).
        "http_client": http_client_class(verify=shared_tls_context(), follow_redirects=False, **proxy),
    }


@cache
def shared_tls_context() -> ssl.SSLContext:
    """The TLS context every client of this process uses: the one the HTTP library would build
    (same trust store and environment variables), built once.

    Building it loads the CA bundle (tens of ms and hundreds of kB); a triggerer that waits on 1,000
    batches builds 1,000 clients, and would otherwise build 1,000 identical contexts, inside its event loop.
    """
    import httpx2

    return httpx2.create_ssl_context()


class ClaudeBatchHook(BaseHook):
    """Talk to the Message Batches API through a `claude_batch` (or `anthropic`) connection.

    Create is never retried blindly: the API has no idempotency key, so a retried create whose
    first answer was lost would make (and bill) a second batch. Reads are retried by the SDK.
    """

    conn_name_attr = "claude_batch_conn_id"
    default_conn_name = "claude_batch_default"
    conn_type = CONN_TYPE
    hook_name = "Claude Message Batches"

    def __init__(self, claude_batch_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.claude_batch_conn_id = claude_batch_conn_id
        self._async_client: AsyncAnthropic | None = None
        # Models API answers by ID, for this hook's life: structured output and preflight both ask.
        self._model_infos: dict[str, ModelInfo | None] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(claude_batch_conn_id={self.claude_batch_conn_id!r})"

    @staticmethod
    def get_ui_field_behaviour() -> dict[str, Any]:
        """For Airflow versions that read the form from the hook rather than the provider info."""
        from airflow_provider_claude_batch.get_provider_info import UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    # ---- clients ------------------------------------------------------------------------------
    @cached_property
    def settings(self) -> ClientSettings:
        """The connection's client settings, read once per hook (secrets masked in the log)."""
        conn: ConnectionLike = self.get_connection(self.claude_batch_conn_id)
        _mask_misplaced_secrets(conn)
        settings = ClientSettings.from_connection(conn)
        self.log.info(
            "%s",
            mask_secrets(
                f"Claude Batches API at {settings.base_url or DEFAULT_BASE_URL}"
                f" (connection {self.claude_batch_conn_id!r}"
                + (f", workspace {settings.workspace_id}" if settings.workspace_id else "")
                + ")"
            ),
        )
        return settings

    async def asettings(self) -> ClientSettings:
        """The settings, read without blocking the triggerer's event loop."""
        if "settings" not in self.__dict__:
            conn: ConnectionLike = await aget_connection(self, self.claude_batch_conn_id)
            _mask_misplaced_secrets(conn)
            self.__dict__["settings"] = ClientSettings.from_connection(conn)
        return self.settings

    def get_conn(self) -> Anthropic:
        """The sync SDK client (Airflow's name for it; same as `client`)."""
        return self.client

    @cached_property
    def client(self) -> Anthropic:
        """The sync SDK client, built once per hook."""
        return build_client(self.settings)

    async def get_async_conn(self) -> AsyncAnthropic:
        """The async SDK client for triggers, built once per hook; close it with `aclose()`.

        Built in a worker thread: the first build in a triggerer imports the SDK and loads the TLS
        certificates, seconds of work that would otherwise freeze every trigger in the event loop.
        """
        if self._async_client is None:
            import asyncio

            settings = await self.asettings()
            self._async_client = await asyncio.to_thread(build_async_client, settings)
        return self._async_client

    async def aclose(self) -> None:
        """Close the async client, if one was built (triggers call it when they end)."""
        if self._async_client is not None:
            client, self._async_client = self._async_client, None
            await client.close()

    def close(self) -> None:
        """Close the sync client's connection pool, if one was built."""
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()

    # ---- batches ------------------------------------------------------------------------------
    def create_batch(self, body: bytes | Sequence[Mapping[str, Any]]) -> MessageBatch:
        """Create one batch from a pre-serialized body (`{"requests": [...]}`) or a list of requests.

        Sent exactly once (no SDK retries): a caller that gets a network error must look for the
        batch before trying again.
        """
        if not isinstance(body, bytes | bytearray | memoryview):
            import msgspec

            body = msgspec.json.encode({"requests": list(body)})
        data = bytes(body)
        return self.create_batch_streamed([data], len(data))

    def create_batch_streamed(self, chunks: Iterable[bytes], content_length: int) -> MessageBatch:
        """Create one batch from a body sent in chunks (no copy of a 256 MB body is ever joined).

        Like `create_batch`, sent exactly once.
        """
        from anthropic.types.messages import MessageBatch

        return self.client.with_options(max_retries=0).post(
            BATCHES_PATH,
            cast_to=MessageBatch,
            content=iter(chunks),
            options={"headers": {"content-type": "application/json", "content-length": str(content_length)}},
        )

    def retrieve_batch(self, batch_id: str) -> MessageBatch:
        """The batch's current status and counts (the SDK retries transient errors)."""
        return self.client.messages.batches.retrieve(batch_id)

    def list_batches(
        self, *, limit: int = 20, after_id: str | None = None, before_id: str | None = None
    ) -> SyncPage[MessageBatch]:
        """One page, newest first; the page's `iter_pages()`/iteration follows the cursor."""
        from anthropic import omit

        return self.client.messages.batches.list(
            limit=limit,
            after_id=after_id or omit,
            before_id=before_id or omit,
        )

    def iter_batches(self, *, page_size: int = 100) -> Iterator[MessageBatch]:
        """Every batch of the workspace, newest first, fetched page by page as you iterate."""
        yield from self.list_batches(limit=page_size)

    def cancel_batch(self, batch_id: str) -> MessageBatch:
        """Ask the API to cancel the batch: requests not yet processed end as canceled, unbilled."""
        return self.client.messages.batches.cancel(batch_id)

    def delete_batch(self, batch_id: str) -> DeletedMessageBatch:
        """Delete an ended batch and its results from the workspace."""
        return self.client.messages.batches.delete(batch_id)

    async def aretrieve_batch(self, batch_id: str) -> MessageBatch:
        """`retrieve_batch` for the triggerer's event loop."""
        client = await self.get_async_conn()
        return await client.messages.batches.retrieve(batch_id)

    # ---- messages -------------------------------------------------------------------------------
    def create_message(
        self, params: bytes | Mapping[str, Any], *, custom_id: str | None = None, max_retries: int = 0
    ) -> dict[str, Any]:
        """One Messages API call at the standard price (`POST /v1/messages`), answered as the decoded Message.

        Not retried by default (`max_retries=0`): a Messages call is billed like a create, so a caller that
        loses an answer decides itself whether sending again is worth paying twice. `custom_id` labels
        the call (a header the API ignores) so logs and the emulator can match it to its request.
        """
        import httpx2
        import msgspec

        body = params if isinstance(params, bytes) else msgspec.json.encode(params)
        headers = {"content-type": "application/json"}
        if custom_id is not None:
            headers[CUSTOM_ID_HEADER] = custom_id
        response = self.client.with_options(max_retries=max_retries).post(
            MESSAGES_PATH, cast_to=httpx2.Response, content=body, options={"headers": headers}
        )
        message: dict[str, Any] = msgspec.json.decode(response.content)
        return message

    # ---- models ---------------------------------------------------------------------------------
    def get_model_info(self, model_id: str) -> ModelInfo | None:
        """What the Models API says about a model ID or alias, or None when the API does not know it (404);
        asked once per hook (a task's structured output and its preflight share the answer).

        A free call: preflight uses it to refuse an unknown or retired model, and a `max_tokens` over
        the model's limit, before any batch is paid for. Other API errors propagate (the SDK retries
        transient ones).
        """
        import anthropic
        import httpx2

        from airflow_provider_claude_batch.preflight.models import decode_model_info

        if not MODEL_ID_PATTERN.fullmatch(model_id):
            raise ValueError(f"{model_id!r} is not shaped like a model ID (letters, digits, '.', '-', '@', ':')")
        if model_id not in self._model_infos:
            try:
                response = self.client.get(f"{MODELS_PATH}/{model_id}", cast_to=httpx2.Response)
                self._model_infos[model_id] = decode_model_info(response.content)
            except anthropic.NotFoundError:
                self._model_infos[model_id] = None
        return self._model_infos[model_id]

    # ---- preflight: free calls ---------------------------------------------------------------------
    def count_tokens(self, body: Mapping[str, Any]) -> int:
        """The input tokens of one Messages body (model, messages, system, tools...; no max_tokens).

        Free, with a rate limit of its own. Sent once (no SDK retries): the caller honours the
        `retry-after` of a 429 and decides when counting is unavailable.
        """
        from anthropic.types import MessageTokensCount

        counted = self.client.with_options(max_retries=0).post(
            COUNT_TOKENS_PATH, body=dict(body), cast_to=MessageTokensCount
        )
        return counted.input_tokens

    def request_headers(self) -> tuple[str, tuple[str, ...]]:
        """The `anthropic-version` every request of this connection sends, and its beta features."""
        headers = self.client.default_headers
        version = str(headers.get("anthropic-version", ""))
        betas = tuple(b.strip() for b in str(headers.get("anthropic-beta", "")).split(",") if b.strip())
        return version, betas

    # ---- results ------------------------------------------------------------------------------
    @contextmanager
    def open_results(self, batch: str | MessageBatch) -> Iterator[httpx2.Response]:
        """The raw HTTP response of a batch's results, unread: stream it with `iter_bytes()`.

        Results are never parsed into one SDK object per line here; landing code copies bytes.
        """
        import httpx2

        if isinstance(batch, str):
            batch = self.retrieve_batch(batch)
        if batch.processing_status != "ended" or not batch.results_url:
            raise BatchNotEndedError(
                f"Batch {batch.id} is {batch.processing_status}; results exist only once it has ended"
            )
        self.check_results_url(batch.id, batch.results_url)
        response = self.client.get(
            batch.results_url,
            cast_to=httpx2.Response,
            stream=True,
            options={"headers": {"Accept": "application/binary"}},
        )
        try:
            yield response
        finally:
            response.close()

    def check_results_url(self, batch_id: str, results_url: str) -> None:
        """Refuse a results URL on another origin than the client's base URL: the SDK would send the
        API key with the download, to whoever the answer named.
        """
        from airflow_provider_claude_batch.exceptions import ResultsOriginRefusedError

        base_url = str(self.client.base_url)
        if not same_origin(results_url, base_url):
            raise ResultsOriginRefusedError(
                f"Batch {batch_id}: the API gave a results_url on {show_origin(results_url)}, not on the "
                f"connection's {show_origin(base_url)}; refusing to send the API key there. Check the "
                "connection's base URL (a gateway must answer with its own URLs).",
                [batch_id],
            )

    def describe_error(self, exc: BaseException) -> str:
        """`describe_api_error` for this connection: a failure at its proxy says so."""
        try:
            proxy = self.settings.proxy
        except Exception:
            proxy = None
        return describe_api_error(exc, proxy)

    def iter_result_chunks(self, batch: str | MessageBatch, chunk_size: int = RESULTS_CHUNK_BYTES) -> Iterator[bytes]:
        """The results file exactly as served, in chunks (for lossless copies)."""
        with self.open_results(batch) as response:
            yield from response.iter_bytes(chunk_size)

    def iter_result_lines(self, batch: str | MessageBatch) -> Iterator[bytes]:
        """One raw JSON line per request (no trailing newline), in the order the API sent them."""
        pending = b""
        for chunk in self.iter_result_chunks(batch):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            yield from (line for line in lines if line)
        if pending.strip():
            yield pending

    # ---- connection test ------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """One cheap call (list one batch) that tells a wrong key from an unreachable URL or proxy."""
        ok, message = self._test_connection()
        return ok, mask_secrets(message)

    def _test_connection(self) -> tuple[bool, str]:
        import anthropic

        try:
            settings = self.settings
            if settings.api_key is None:
                return False, "No API key: put the Claude API key in the connection's password field."
            page = self.client.with_options(max_retries=0).messages.batches.list(limit=1)
        except anthropic.AuthenticationError as exc:
            return False, f"Authentication failed (401, request {exc.request_id}): the API key was rejected."
        except anthropic.PermissionDeniedError as exc:
            return False, (
                f"Permission denied (403, request {exc.request_id}): the key cannot use the "
                "Message Batches API in this workspace; check the workspace ID."
            )
        except anthropic.APIConnectionError as exc:
            if settings.proxy:
                return False, (
                    f"Cannot reach the API through the proxy {show_origin(settings.proxy)}: "
                    f"{type(exc.__cause__ or exc).__name__}: {exc.__cause__ or exc}. Check the "
                    "connection's proxy (host, port, credentials)."
                )
            return False, f"Cannot reach {settings.base_url or DEFAULT_BASE_URL}: {exc}"
        except anthropic.APIStatusError as exc:
            if exc.status_code == 407:
                return False, (
                    f"The proxy {show_origin(settings.proxy or '')} refused the request (407 Proxy "
                    "Authentication Required): check the credentials in the connection's proxy URL."
                )
            return False, f"The API answered {exc.status_code} ({exc.type}): {exc.api_message}"
        except ValueError as exc:
            return False, str(exc)
        newest = page.data[0].id if page.data else "none yet"
        return True, f"Connection OK: Message Batches API reachable (newest batch: {newest})."


def _mask_misplaced_secrets(conn: ConnectionLike) -> None:
    """A key pasted into the host or an extra field is not masked by Airflow (only the password is):
    register every secret-shaped part of them, so that no log line of the task shows it, ours or the
    HTTP library's (which logs each request's URL).
    """
    from airflow_provider_claude_batch._compat import mask_secret

    texts = [conn.host or ""] + [str(v) for v in (conn.extra_dejson or {}).values()]
    for part in {p for text in texts for p in secret_shaped_parts(text)}:
        mask_secret(part)


__all__ = ["BatchNotEndedError", "ClaudeBatchHook", "build_async_client", "build_client"]
