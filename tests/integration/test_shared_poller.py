"""Many `ClaudeBatchTrigger`s in one event loop, as a triggerer runs them: one shared poller per
connection lists their batches instead of retrieving each one (the official SDK over real HTTP to
the emulator)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import anthropic
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger
from airflow_provider_claude_batch.wait import poller as poller_module
from airflow_provider_claude_batch.wait import tracker as waiting
from tests.helpers import make_requests


def _trigger(batch_ids: list[str], conn_id: str = "claude_batch_default", **overrides: Any) -> ClaudeBatchTrigger:
    settings: dict[str, Any] = {"deadline": time.time() + 60, "poll_interval": 0.1, "max_poll_interval": 0.2}
    settings.update(overrides)
    return ClaudeBatchTrigger(batch_ids, conn_id, **settings)


async def _run(trigger: ClaudeBatchTrigger) -> dict[str, Any]:
    """Drive a trigger the way Airflow's triggerer does."""
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    payload: dict[str, Any] = events[0]
    return payload


def _create(count: int, prefix: str = "w") -> list[str]:
    hook = ClaudeBatchHook()
    return [hook.create_batch(make_requests(1, f"{prefix}{i}")).id for i in range(count)]


async def _end_every_batch_after(control: EmulatorControl, seconds: float) -> None:
    """Let the triggers poll in-progress batches for a while, then end them all at once (emulator clock)."""
    await asyncio.sleep(seconds)
    await asyncio.to_thread(control.advance, 3600)


@pytest.fixture
def built_clients(monkeypatch: pytest.MonkeyPatch) -> list[anthropic.AsyncAnthropic]:
    """Every SDK client the triggers build, in order."""
    built: list[anthropic.AsyncAnthropic] = []
    real_build = ClaudeBatchHook.get_async_conn

    async def recording_build(self: ClaudeBatchHook) -> anthropic.AsyncAnthropic:
        client = await real_build(self)
        if client not in built:
            built.append(client)
        return client

    monkeypatch.setattr(ClaudeBatchHook, "get_async_conn", recording_build)
    return built


@pytest.fixture
def errors_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, ...], int | None]]:
    """(batch IDs, status) of every API error a trigger's own tracker was told about."""
    seen: list[tuple[tuple[str, ...], int | None]] = []
    real = waiting.WaitTracker.after_error

    def recording(tracker: waiting.WaitTracker, status_code: int | None, *args: Any) -> waiting.Decision:
        seen.append((tuple(tracker.batch_ids), status_code))
        return real(tracker, status_code, *args)

    monkeypatch.setattr(waiting.WaitTracker, "after_error", recording)
    return seen


async def test_many_triggers_in_one_loop_list_their_batches_with_one_client(
    claude_conn: str, control: EmulatorControl, built_clients: list[anthropic.AsyncAnthropic]
) -> None:
    control.configure(processing_seconds=60)
    ids = _create(20)
    started = time.monotonic()
    events = await asyncio.gather(*(_run(_trigger([b])) for b in ids), _end_every_batch_after(control, 0.5))
    elapsed = time.monotonic() - started
    events.pop()
    assert [e["status"] for e in events] == ["ended"] * 20
    assert [e["batch_ids"] for e in events] == [[b] for b in ids]
    assert all(e["batches"][b]["processing_status"] == "ended" for e, b in zip(events, ids, strict=True))
    calls = control.state(custom_ids=False)["calls"]
    assert calls.get("retrieve", 0) == 0
    # one List call per round of polls, not one retrieve per trigger
    assert 1 <= calls["list"] <= elapsed / 0.09 + 2
    assert len(built_clients) == 1 and built_clients[0].is_closed()
    assert not poller_module._pollers.get(asyncio.get_running_loop())


async def test_a_lone_trigger_and_a_few_batches_are_retrieved_as_before(
    claude_conn: str, control: EmulatorControl
) -> None:
    control.configure(processing_seconds=0.3)
    ids = _create(3)
    events = await asyncio.gather(_run(_trigger(ids[:2])), _run(_trigger(ids[2:])))
    assert [e["status"] for e in events] == ["ended", "ended"]
    calls = control.state(custom_ids=False)["calls"]
    assert "list" not in calls and calls["retrieve"] >= 3


async def test_a_wanted_batch_missing_from_the_listing_is_still_retrieved(
    claude_conn: str, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller_module, "PAGE_LIMIT", 5)  # 8 wanted: one page of the 5 newest, the 3 oldest not on it
    control.configure(processing_seconds=60)
    ids = _create(8)
    events = await asyncio.gather(*(_run(_trigger([b])) for b in ids), _end_every_batch_after(control, 0.4))
    assert [e["status"] for e in events[:8]] == ["ended"] * 8
    calls = control.state(custom_ids=False)["calls"]
    assert calls["list"] >= 2
    assert calls["retrieve"] == 3 * calls["list"]


async def test_a_rate_limited_or_failing_list_call_reaches_every_trigger_and_all_recover(
    claude_conn: str, control: EmulatorControl, errors_seen: list[tuple[tuple[str, ...], int | None]]
) -> None:
    control.configure(processing_seconds=1.0)
    ids = _create(10)
    control.inject(
        {"endpoint": "list", "status": 429, "retry_after": 0.1, "count": 1},
        {"endpoint": "list", "status": 529, "count": 1},
    )
    events = await asyncio.gather(*(_run(_trigger([b])) for b in ids))
    assert [e["status"] for e in events] == ["ended"] * 10
    assert {(batch_ids[0], status) for batch_ids, status in errors_seen} == {
        (b, status) for b in ids for status in (429, 529)
    }
    state = control.state(custom_ids=False)
    assert state["responses"]["list 429"] == 1 and state["responses"]["list 529"] == 1
    assert "cancel" not in state["calls"]


async def test_a_refused_list_call_falls_back_to_retrieves_and_never_logs_the_key(
    claude_conn: str,
    control: EmulatorControl,
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    control.configure(processing_seconds=0.3)
    ids = _create(8)
    control.inject({"endpoint": "list", "status": 403, "count": 1})
    events = await asyncio.gather(*(_run(_trigger([b])) for b in ids))
    assert [e["status"] for e in events] == ["ended"] * 8
    assert control.state(custom_ids=False)["calls"]["retrieve"] >= 8
    logged = caplog.text + capfd.readouterr().out
    assert "Listing batches on connection 'claude_batch_default' failed (403 permission_error" in logged
    assert emulator.api_key not in logged


async def test_two_connections_never_share_a_client_or_a_listing(
    claude_conn: str,
    control: EmulatorControl,
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    built_clients: list[anthropic.AsyncAnthropic],
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_BATCH_OTHER",
        json.dumps({"conn_type": "claude_batch", "host": emulator.url, "password": emulator.api_key}),
    )
    control.configure(processing_seconds=60)
    ids = _create(16)
    loop = asyncio.get_running_loop()
    seen: dict[str, poller_module.SharedPoller] = {}

    async def watch() -> None:
        while len(seen) < 2:
            seen.update(poller_module._pollers.get(loop, {}))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    events = await asyncio.gather(
        *(_run(_trigger([b])) for b in ids[:8]),
        *(_run(_trigger([b], "claude_batch_other")) for b in ids[8:]),
        _end_every_batch_after(control, 0.5),
    )
    await asyncio.wait_for(watcher, 1)
    assert [e["status"] for e in events[:16]] == ["ended"] * 16
    assert set(seen) == {"claude_batch_default", "claude_batch_other"}
    assert all(p.cycles >= 1 for p in seen.values())
    assert len(built_clients) == 2 and built_clients[0] is not built_clients[1]
    assert all(c.is_closed() for c in built_clients)
    assert control.state(custom_ids=False)["calls"].get("retrieve", 0) == 0


async def test_a_trigger_cancelled_mid_wait_does_not_disturb_the_others(
    claude_conn: str, control: EmulatorControl, built_clients: list[anthropic.AsyncAnthropic]
) -> None:
    control.configure(processing_seconds=0.8)
    ids = _create(12)
    tasks = [asyncio.create_task(_run(_trigger([b]))) for b in ids]
    await asyncio.sleep(0.02)  # waiting for the client or for the first cycle
    tasks[0].cancel()
    await asyncio.sleep(0.3)  # between polls, or in a cycle
    tasks[1].cancel()
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results[:3])
    assert [r["status"] for r in results[3:]] == ["ended"] * 9  # type: ignore[index]
    assert len(built_clients) == 1 and built_clients[0].is_closed()
    assert not poller_module._pollers.get(asyncio.get_running_loop())


async def test_the_shared_client_is_closed_when_the_last_trigger_leaves_not_before(
    claude_conn: str, control: EmulatorControl, built_clients: list[anthropic.AsyncAnthropic]
) -> None:
    control.configure(processing_seconds=3600)
    ids = _create(2)
    short = asyncio.create_task(_run(_trigger([ids[0]], deadline=time.time() + 0.3)))
    long = asyncio.create_task(_run(_trigger([ids[1]], deadline=time.time() + 0.8)))
    assert (await short)["status"] == "timeout"
    assert len(built_clients) == 1 and not built_clients[0].is_closed()
    assert (await long)["status"] == "timeout"
    assert built_clients[0].is_closed()
    assert not poller_module._pollers.get(asyncio.get_running_loop())


async def test_triggers_started_apart_come_into_step_and_share_one_listing(
    claude_conn: str, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two groups whose polls fall due further apart than a poll waits for others (a fifth of the
    interval) would each list the same pages in cycles of their own, forever; a poll may also join a
    cycle that others start up to half its interval early, so they share one after a round or two."""
    control.configure(processing_seconds=60)
    ids = _create(16)
    wanted: list[int] = []
    real_read = poller_module.SharedPoller._read

    async def read(poller: poller_module.SharedPoller, batch_ids: list[str]) -> Any:
        wanted.append(len(batch_ids))
        return await real_read(poller, batch_ids)

    monkeypatch.setattr(poller_module.SharedPoller, "_read", read)

    async def later(seconds: float, trigger: ClaudeBatchTrigger) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return await _run(trigger)

    async def in_step() -> None:
        while wanted[-2:] != [16, 16]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    settings = {"poll_interval": 0.5, "max_poll_interval": 0.5}
    runs = [asyncio.create_task(later(0.25 * (i >= 8), _trigger([b], **settings))) for i, b in enumerate(ids)]
    await asyncio.wait_for(in_step(), 6)
    await asyncio.to_thread(control.advance, 3600)
    assert [e["status"] for e in await asyncio.gather(*runs)] == ["ended"] * 16
    assert wanted[0] == 8  # the first group's first cycle, before the second group came
