"""ClaudeBatchTrigger on its own: serialization, the async client's lifecycle, progress, on_kill."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import anthropic
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.triggers import claude_batch as trigger_module
from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchQueueTrigger, ClaudeBatchTrigger
from airflow_provider_claude_batch.wait import poller as poller_module
from tests.helpers import make_requests


def _trigger(batch_ids: list[str], **overrides: Any) -> ClaudeBatchTrigger:
    settings: dict[str, Any] = {"deadline": time.time() + 60, "poll_interval": 0.1, "max_poll_interval": 0.5}
    settings.update(overrides)
    return ClaudeBatchTrigger(batch_ids, "claude_batch_default", **settings)


async def _events(trigger: Any) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


def test_it_serializes_ids_and_settings_but_never_the_key(claude_conn: str, emulator: EmulatorServer) -> None:
    trigger = _trigger(["msgbatch_a", "msgbatch_b"], cancel_on_kill=True)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_claude_batch.triggers.claude_batch.ClaudeBatchTrigger"
    assert set(kwargs) == {
        "batch_ids",
        "conn_id",
        "deadline",
        "poll_interval",
        "max_poll_interval",
        "error_budget",
        "cancel_on_kill",
        "started_at",
    }
    assert emulator.api_key not in repr(kwargs)
    assert ClaudeBatchTrigger(**kwargs).serialize() == (classpath, kwargs)


async def test_it_waits_with_one_async_client_logs_progress_and_closes_it(
    claude_conn: str,
    control: EmulatorControl,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    control.configure(processing_seconds=0.4)
    hook = ClaudeBatchHook()
    ids = [hook.create_batch(make_requests(2, f"p{i}")).id for i in range(2)]
    built: list[anthropic.AsyncAnthropic] = []
    real_build = trigger_module.ClaudeBatchHook.get_async_conn

    async def counting_build(self: ClaudeBatchHook) -> anthropic.AsyncAnthropic:
        client = await real_build(self)
        if client not in built:
            built.append(client)
        return client

    def no_sync_client(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the trigger must not use the sync client (in a thread or otherwise)")

    monkeypatch.setattr(trigger_module.ClaudeBatchHook, "get_async_conn", counting_build)
    monkeypatch.setattr("airflow_provider_claude_batch.hooks.claude_batch.build_client", no_sync_client)
    caplog.set_level(logging.INFO)
    (event,) = await _events(_trigger(ids))
    assert event["status"] == "ended" and event["batch_ids"] == ids
    assert {b["processing_status"] for b in event["batches"].values()} == {"ended"}
    assert len(built) == 1 and built[0].is_closed()
    logged = caplog.text + capfd.readouterr().out
    assert "2 batch(es): 2 in_progress; 4 requests (processing 4); 0% done" in logged
    assert "2 batch(es): 2 ended; 4 requests (succeeded 4); 100% done" in logged


async def test_it_rides_out_errors_and_reports_a_spent_budget(claude_conn: str, control: EmulatorControl) -> None:
    control.configure(processing_seconds=3600)
    batch_id = ClaudeBatchHook().create_batch(make_requests(1)).id
    control.inject({"endpoint": "retrieve", "status": 529, "retry_after": 0.1, "for_seconds": 3600})
    (event,) = await _events(_trigger([batch_id], error_budget=0.5))
    assert event["status"] == "error" and event["error_kind"] == "unavailable"
    assert control.state()["responses"]["retrieve 529"] >= 3
    assert "cancel" not in control.state()["calls"]


async def test_a_broken_connection_ends_the_wait_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT", '{"conn_type": "claude_batch", "extra": {"timeout": "x"}}')
    (event,) = await _events(_trigger(["msgbatch_a"]))
    assert event["status"] == "error" and "timeout must be a number" in event["message"]


class _FakeTI:
    dag_id, task_id, run_id, map_index = "d", "t", "r", -1


@pytest.mark.parametrize(
    ("state", "cancel_on_kill", "canceled"),
    [
        ("failed", True, True),  # the user marked the deferred task failed: stop spending
        (None, True, False),  # cleared: the next try re-attaches, so keep the batch
        ("success", True, False),  # marked success: keep the work
        ("deferred", True, False),  # moved to another triggerer: nothing happened to the task
        ("failed", False, False),  # cancel_on_kill off
    ],
)
async def test_on_kill_cancels_only_when_the_user_marked_the_task_failed(
    claude_conn: str,
    control: EmulatorControl,
    monkeypatch: pytest.MonkeyPatch,
    state: str | None,
    cancel_on_kill: bool,
    canceled: bool,
) -> None:
    control.configure(processing_seconds=3600)
    batch_id = ClaudeBatchHook().create_batch(make_requests(1)).id

    async def current_state(trigger: Any) -> str | None:
        return state

    monkeypatch.setattr(trigger_module, "_current_task_state", current_state)
    trigger = _trigger([batch_id], cancel_on_kill=cancel_on_kill)
    trigger.task_instance = _FakeTI()  # type: ignore[assignment]
    await trigger.on_kill()
    assert control.state()["batches"][0]["canceled"] is canceled


def _lookup_fails(**kwargs: Any) -> Any:
    raise ConnectionError("API server unreachable")


@pytest.mark.parametrize(
    ("answer", "canceled"),
    [
        ({"r": {"t": "deferred"}}, False),  # a triggerer hand-off (Airflow 3.3 calls on_kill): still deferred
        ({"r": {"t": "queued"}}, False),  # the trigger fired / the task resumes elsewhere
        ({"r": {"t": "scheduled"}}, False),
        ({"r": {"t": "restarting"}}, False),  # a triggerer restart
        ({"r": {"t": "up_for_retry"}}, False),
        ({"r": {}}, False),  # cleared: state None
        ({}, False),  # unknown task instance
        (_lookup_fails, False),  # the lookup itself failed: never cancel on doubt
        ({"r": {"t": "failed"}}, True),  # a user marked it failed: stop spending
    ],
)
async def test_on_kill_reads_the_state_from_the_api_and_cancels_only_a_failed_task(
    claude_conn: str, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch, answer: Any, canceled: bool
) -> None:
    """Through the real state lookup (`task_state.current_task_state`), stubbed only where the API server answers."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    control.configure(processing_seconds=3600)
    batch_id = ClaudeBatchHook().create_batch(make_requests(1)).id
    lookup = answer if callable(answer) else (lambda **kwargs: answer)
    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(lookup))
    trigger = _trigger([batch_id], cancel_on_kill=True)
    trigger.task_instance = _FakeTI()  # type: ignore[assignment]
    await trigger.on_kill()
    state = control.state()
    assert state["batches"][0]["canceled"] is canceled
    assert state["calls"].get("cancel", 0) == (1 if canceled else 0)


async def test_on_kill_without_a_task_instance_cancels_nothing(claude_conn: str, control: EmulatorControl) -> None:
    control.configure(processing_seconds=3600)
    trigger = _trigger([ClaudeBatchHook().create_batch(make_requests(1)).id], cancel_on_kill=True)
    trigger.task_instance = None  # type: ignore[assignment]
    await trigger.on_kill()
    assert control.state()["calls"].get("cancel", 0) == 0


async def test_the_queue_trigger_fires_once_there_is_room(claude_conn: str, control: EmulatorControl) -> None:
    control.configure(processing_seconds=0.5)
    ClaudeBatchHook().create_batch(make_requests(4))
    started = time.monotonic()
    (event,) = await _events(ClaudeBatchQueueTrigger(needed=3, max_queued=5, poll_interval=0.1))
    assert event == {"status": "fits", "queued": 0}
    assert time.monotonic() - started >= 0.3


_FIRST_RUN_PROBE = """
import asyncio, json, sys, threading, time
from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger

imported_in = []


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "anthropic":
            imported_in.append(threading.current_thread().name)
        return None


sys.meta_path.insert(0, Watch())
assert "anthropic" not in sys.modules
trigger = ClaudeBatchTrigger([sys.argv[1]], "claude_batch_default", deadline=time.time() + 60, poll_interval=0.1)


async def first_event():
    async for event in trigger.run():
        return event.payload


payload = asyncio.run(first_event())
print(json.dumps({"imported_in": imported_in, "status": payload["status"],
                  "loop_thread": threading.current_thread().name}))
"""


def test_the_first_trigger_in_a_triggerer_loads_the_sdk_off_the_event_loop(
    claude_conn: str, emulator: EmulatorServer
) -> None:
    """A triggerer runs every trigger in one event loop: importing the SDK there (seconds, once per
    process) would freeze all of them, so the first client is built in a worker thread."""
    import json
    import os
    import subprocess
    import sys

    batch = ClaudeBatchHook().create_batch(make_requests(1))
    emulator.control.advance(3600)
    probe = subprocess.run(
        [sys.executable, "-c", _FIRST_RUN_PROBE, batch.id],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
        check=True,
    )
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["status"] == "ended"
    assert report["imported_in"], "the probe did not see the SDK being imported"
    assert report["loop_thread"] not in report["imported_in"]


class _SlowBatches:
    """Counts how many retrieves are in flight at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.in_flight = self.peak = 0

    async def retrieve(self, batch_id: str) -> str:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.seconds)
        self.in_flight -= 1
        return batch_id


async def test_many_triggers_start_their_polls_a_few_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "POLL_SLOTS", 3)
    batches = _SlowBatches(0.01)
    client: Any = SimpleNamespace(messages=SimpleNamespace(batches=batches))
    ids = [f"msgbatch_{i}" for i in range(20)]
    assert await asyncio.gather(*(poller_module._retrieve(client, b) for b in ids)) == ids
    assert batches.peak == 3


async def test_a_slow_poll_gives_its_slot_back_so_others_are_not_held_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller_module, "POLL_SLOTS", 2)
    monkeypatch.setattr(poller_module, "SLOW_POLL_SECONDS", 0.05)
    batches = _SlowBatches(0.5)
    client: Any = SimpleNamespace(messages=SimpleNamespace(batches=batches))
    started = time.monotonic()
    await asyncio.gather(*(poller_module._retrieve(client, f"msgbatch_{i}") for i in range(6)))
    assert batches.peak == 6 and time.monotonic() - started < 1.0
