"""10,000 `ClaudeBatchTrigger`s in one event loop, started and driven as a triggerer does: the shared
poller answers them all from the List endpoint, about ten pages a cycle, and never holds the loop for
a whole cycle (the official SDK over real HTTP to the emulator)."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger
from airflow_provider_claude_batch.wait import poller as poller_module
from airflow_provider_claude_batch.wait.watch import Watch
from tests.helpers import make_requests

WAITING = 10_000


class _Turns:
    """Counts the loop's turns (a coroutine that yields every turn), and the most work seen in one."""

    def __init__(self) -> None:
        self.cycle = 0
        self.done: Counter[str] = Counter()  # all of it
        self.work: Counter[str] = Counter()  # since the last turn
        self.most: Counter[str] = Counter()  # the most between two turns
        self.by_cycle: dict[str, Counter[int]] = {"page": Counter(), "answer": Counter()}

    def did(self, what: str) -> None:
        self.done[what] += 1
        self.work[what] += 1
        if what in self.by_cycle:
            self.by_cycle[what][self.cycle] += 1

    async def run(self) -> None:
        while True:
            await asyncio.sleep(0)
            for what, count in self.work.items():
                self.most[what] = max(self.most[what], count)
            self.work.clear()


@pytest.fixture
def turns(monkeypatch: pytest.MonkeyPatch) -> _Turns:
    """List pages decoded and watches answered (by cycle), watches registered, triggers woken."""
    seen = _Turns()
    real_decode, real_answer, real_wake = poller_module.decode_page, Watch.after_answer, Watch._wake
    real_run, real_watch = poller_module.SharedPoller._run_cycle, poller_module.SharedPoller.watch

    def decode(body: bytes) -> Any:
        seen.did("page")
        return real_decode(body)

    def after_answer(watch: Watch, *args: Any) -> bool:
        seen.did("answer")
        return real_answer(watch, *args)

    async def run_cycle(poller: poller_module.SharedPoller) -> None:
        seen.cycle = poller.cycles + 1
        await real_run(poller)

    def wake(watch: Watch) -> bool:
        if watch._woken is not None and not watch._woken.done():
            seen.did("wake")
        return real_wake(watch)

    def register(poller: poller_module.SharedPoller, *args: Any, **kwargs: Any) -> Any:
        seen.did("register")
        return real_watch(poller, *args, **kwargs)

    monkeypatch.setattr(poller_module, "decode_page", decode)
    monkeypatch.setattr(Watch, "after_answer", after_answer)
    monkeypatch.setattr(Watch, "_wake", wake)
    monkeypatch.setattr(poller_module.SharedPoller, "_run_cycle", run_cycle)
    monkeypatch.setattr(poller_module.SharedPoller, "watch", register)
    return seen


@pytest.mark.slow
async def test_one_poller_answers_10000_waiting_triggers_from_about_ten_pages_a_cycle(
    claude_conn: str, control: EmulatorControl, turns: _Turns
) -> None:
    control.configure(processing_seconds=3600)
    ids = control.create_batches(WAITING, make_requests(1))
    ticker = asyncio.create_task(turns.run())

    async def drive(trigger: ClaudeBatchTrigger) -> dict[str, Any]:
        payloads = [event.payload async for event in trigger.run()]
        assert len(payloads) == 1
        return dict(payloads[0])

    tasks = []
    for batch_id in ids:  # one per turn of the loop, as Airflow's triggerer creates them
        await asyncio.sleep(0)
        trigger = ClaudeBatchTrigger([batch_id], deadline=time.time() + 600, poll_interval=1.0)
        tasks.append(asyncio.create_task(drive(trigger)))

    async def in_step() -> None:
        while list(turns.by_cycle["answer"].values()).count(WAITING) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.1)

    # Polled in-progress batches until two cycles answered every trigger (they came into step)...
    await asyncio.wait_for(in_step(), 30)
    await asyncio.to_thread(control.advance, 7200)  # ...then every batch ends
    events = await asyncio.gather(*tasks)
    ticker.cancel()

    assert [e["status"] for e in events] == ["ended"] * WAITING
    assert [e["batch_ids"] for e in events] == [[b] for b in ids]
    calls = control.state(custom_ids=False)["calls"]
    pages = turns.by_cycle["page"]
    assert calls.get("retrieve", 0) == 0 and calls["list"] == sum(pages.values())
    assert max(pages.values()) <= math.ceil(WAITING / poller_module.PAGE_LIMIT) + 1
    # one cycle reads the ten pages once for all the triggers, not one cycle per group of them
    assert len(pages) <= 10
    # a trigger's task is woken to log its first progress line and to end, not once per cycle
    assert len(turns.by_cycle["answer"]) >= 3 and turns.done["wake"] <= 2 * WAITING
    # the loop turns between pages, while the answers are handed out and while the triggers that
    # waited for the client go on: never a whole cycle, or a whole triggerer, in one turn
    assert turns.most["page"] == 1
    assert turns.most["answer"] <= poller_module.WATCHES_PER_TURN
    assert turns.most["wake"] <= poller_module.WAKES_PER_TURN
    assert turns.done["register"] == WAITING and turns.most["register"] <= poller_module.WAKES_PER_TURN + 1
    assert not poller_module._pollers.get(asyncio.get_running_loop())
