"""A fake async SDK client behind the real hook, so that triggers run without a network.

The client answers each call from a script: a `MessageBatch`, a list of them (a List page), or an
SDK error to raise. The triggers, the shared poller, the trackers and the error rule are the real ones.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types.messages import MessageBatch

from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

KEY = "sk-ant-api03-" + "Fk9_zQ2-" * 12


def batch(
    batch_id: str, status: str = "in_progress", processing: int = 1, created_at: float | None = None
) -> MessageBatch:
    created = datetime.fromtimestamp(time.time() if created_at is None else created_at, tz=UTC)
    ended = status == "ended"
    return MessageBatch.model_validate(
        {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": {
                "processing": 0 if ended else processing,
                "succeeded": processing if ended else 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": created.isoformat(),
            "expires_at": created.isoformat(),
            "ended_at": created.isoformat() if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
    )


def api_error(status: int, retry_after: float | None = 0.01) -> anthropic.APIStatusError:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    response = httpx2.Response(
        status, headers=headers, request=httpx2.Request("GET", "https://api.example/v1/messages/batches")
    )
    return anthropic.APIStatusError(f"status {status}", response=response, body=None)


class _Pages:
    """What `batches.list()` returns: iterated with `async for`."""

    def __init__(self, items: list[MessageBatch]) -> None:
        self.items = items

    async def __aiter__(self) -> AsyncIterator[MessageBatch]:
        for item in self.items:
            yield item


class FakeBatches:
    """`client.messages.batches`: retrieve and list answer from their scripts, the last answer repeating."""

    def __init__(self) -> None:
        self.retrieves: list[object] = []
        self.lists: list[object] = []
        self.calls: list[str] = []
        self.canceled: list[str] = []

    @staticmethod
    def _next(script: list[object]) -> object:
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def retrieve(self, batch_id: str) -> object:
        self.calls.append(f"retrieve {batch_id}")
        answer = self._next(self.retrieves)
        return answer(batch_id) if callable(answer) else answer

    def list(self, limit: int) -> _Pages:
        self.calls.append("list")
        answer = self._next(self.lists)
        return _Pages(list(answer))  # type: ignore[call-overload]

    async def cancel(self, batch_id: str) -> None:
        self.canceled.append(batch_id)


class FakeClient:
    """The part of `AsyncAnthropic` the triggers use."""

    def __init__(self) -> None:
        self.batches = FakeBatches()
        self.messages = self
        self.builds = 0

    def with_options(self, **options: Any) -> FakeClient:
        return self


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    """Every hook of the test gets this client (a connection with a key is defined, never used)."""
    client = FakeClient()
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT", json.dumps({"conn_type": "claude_batch", "password": KEY}))

    async def get_async_conn(self: ClaudeBatchHook) -> FakeClient:
        client.builds += 1
        return client

    monkeypatch.setattr(ClaudeBatchHook, "get_async_conn", get_async_conn)
    return client
