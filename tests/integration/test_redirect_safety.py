"""A server that answers with a redirect to another origin gets nothing of ours sent there: the SDK's HTTP
client follows redirects and strips only `Authorization` on a cross-origin hop, so a gateway's key in the
connection's extra headers (and every other header) went along. Real HTTP between two local servers
(two ports: two origins), the SDK clients the hook builds."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import pytest

from airflow_provider_claude_batch.hooks.claude_batch import build_async_client, build_client
from airflow_provider_claude_batch.hooks.client_settings import ClientSettings, Secret

KEY = "sk-ant-api03-redirect-test-key"
GATEWAY_KEY = "gw-7f3a9c2e5b8d1f4a6c0e9b2d5f8a1c4e"


class _Server:
    def __init__(self, location: str | None) -> None:
        self.headers: list[dict[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
                if location is not None:
                    self.send_response(302)
                    self.send_header("Location", location + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"type": "error", "error": {"type": "not_found_error", "message": "x"}}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def servers() -> Iterator[tuple[_Server, _Server]]:
    elsewhere = _Server(None)
    redirector = _Server(elsewhere.url)
    yield redirector, elsewhere
    for server in (redirector, elsewhere):
        server.httpd.shutdown()
        server.httpd.server_close()


def test_a_redirect_to_another_origin_is_refused_and_the_key_is_not_sent(servers: tuple[_Server, _Server]) -> None:
    redirector, elsewhere = servers
    settings = ClientSettings(
        api_key=Secret(KEY), base_url=redirector.url, max_retries=0, extra_headers={"x-gateway-key": GATEWAY_KEY}
    )
    with pytest.raises(anthropic.APIStatusError) as raised:
        build_client(settings).messages.batches.retrieve("msgbatch_1")
    assert raised.value.status_code == 302 and KEY not in str(raised.value)
    assert redirector.headers[0]["x-gateway-key"] == GATEWAY_KEY  # (the connection's own origin)
    assert elsewhere.headers == []

    async def retrieve() -> None:
        await build_async_client(settings).messages.batches.retrieve("msgbatch_1")

    with pytest.raises(anthropic.APIStatusError, match="302"):
        asyncio.run(retrieve())
    assert elsewhere.headers == []
