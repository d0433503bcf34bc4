"""Both triggers over a fake async client: the one error rule (a refusal ends at once, transient
errors are ridden out, then "unavailable"), the queue guard fitting or waiting, one client per connection."""

from __future__ import annotations

import time
from typing import Any

from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchQueueTrigger, ClaudeBatchTrigger
from tests.unit.triggers.conftest import KEY, FakeClient, api_error, batch


async def _events(trigger: Any) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def _wait(ids: list[str], **overrides: Any) -> ClaudeBatchTrigger:
    settings: dict[str, Any] = {"deadline": time.time() + 30, "poll_interval": 0.01, "max_poll_interval": 0.02}
    settings.update(overrides)
    return ClaudeBatchTrigger(ids, **settings)


async def test_the_wait_trigger_fires_once_every_batch_has_ended(fake_client: FakeClient) -> None:
    fake_client.batches.retrieves = [batch("msgbatch_a"), batch("msgbatch_a", "ended")]
    (event,) = await _events(_wait(["msgbatch_a"]))
    assert event["status"] == "ended" and event["batches"]["msgbatch_a"]["processing_status"] == "ended"
    assert fake_client.builds == 1


async def test_a_refusal_ends_the_wait_at_once(fake_client: FakeClient) -> None:
    fake_client.batches.retrieves = [api_error(401)]
    (event,) = await _events(_wait(["msgbatch_a"], error_budget=600))
    assert (event["status"], event["error_kind"]) == ("error", "refused")
    assert fake_client.batches.calls == ["retrieve msgbatch_a"]


async def test_transient_errors_are_ridden_out_then_a_success_carries_on(fake_client: FakeClient) -> None:
    fake_client.batches.retrieves = [api_error(529), api_error(503), batch("msgbatch_a", "ended")]
    (event,) = await _events(_wait(["msgbatch_a"], error_budget=600))
    assert event["status"] == "ended" and len(fake_client.batches.calls) == 3


async def test_transient_errors_past_the_budget_end_the_wait_unavailable(fake_client: FakeClient) -> None:
    fake_client.batches.retrieves = [api_error(529)]
    (event,) = await _events(_wait(["msgbatch_a"], error_budget=0.2))
    assert (event["status"], event["error_kind"]) == ("error", "unavailable")
    assert "left running" in event["message"] and len(fake_client.batches.calls) >= 3
    assert fake_client.batches.canceled == []


async def test_a_connection_that_cannot_be_built_ends_with_a_masked_reason(monkeypatch: Any) -> None:
    async def broken(self: ClaudeBatchHook) -> Any:
        raise ValueError(f"timeout must be a number, got {KEY}")

    monkeypatch.setattr(ClaudeBatchHook, "get_async_conn", broken)
    for trigger in (_wait(["msgbatch_a"]), ClaudeBatchQueueTrigger(1, 5)):
        (event,) = await _events(trigger)
        assert (event["status"], event["error_kind"]) == ("error", "refused")
        assert "timeout must be a number" in event["message"] and KEY not in event["message"]


async def test_the_queue_trigger_fires_when_the_requests_fit(fake_client: FakeClient) -> None:
    fake_client.batches.lists = [[batch("msgbatch_a", processing=2)]]
    (event,) = await _events(ClaudeBatchQueueTrigger(3, 5, poll_interval=0.01))
    assert event == {"status": "fits", "queued": 2}


async def test_the_queue_trigger_waits_until_there_is_room(fake_client: FakeClient) -> None:
    fake_client.batches.lists = [[batch("msgbatch_a", processing=4)], [batch("msgbatch_a", "ended", 4)]]
    (event,) = await _events(ClaudeBatchQueueTrigger(3, 5, poll_interval=0.01))
    assert event == {"status": "fits", "queued": 0}
    assert fake_client.batches.calls == ["list", "list"]


async def test_the_queue_trigger_follows_the_same_error_rule(fake_client: FakeClient) -> None:
    fake_client.batches.lists = [api_error(403)]
    (refused,) = await _events(ClaudeBatchQueueTrigger(1, 5, poll_interval=0.01, error_budget=600))
    assert (refused["status"], refused["error_kind"]) == ("error", "refused")
    assert fake_client.batches.calls == ["list"]
    fake_client.batches.lists = [api_error(529)]
    (spent,) = await _events(ClaudeBatchQueueTrigger(1, 5, poll_interval=0.01, error_budget=0.2))
    assert (spent["status"], spent["error_kind"]) == ("error", "unavailable")
    assert spent["message"].startswith("Cannot list batches for")
