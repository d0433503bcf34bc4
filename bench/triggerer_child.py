"""Figure 4's child process: one contender's triggers in one event loop (see `bench.triggerer`).

`python -m bench.triggerer_child KIND URL EMULATOR_PID` reads the batch IDs on stdin and prints the
run's measures as one JSON line; `--poll-costs URL BATCH_ID` prints the CPU of one poll, each way.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import sys
import time
import urllib.request
from typing import Any

import httpx2

from bench.emulator_alone import HEADERS
from bench.neighbours import process_seconds
from bench.triggerer import (
    BARE_POLL,
    OUR_POLL,
    OURS,
    POLL_SECONDS,
    SETTLE_POLLS,
    THEIR_POLL,
    TICK_SECONDS,
    WINDOW_SECONDS,
)


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def _calls(url: str) -> dict[str, int]:
    request = urllib.request.Request(url + "/_emulator/state?custom_ids=false", headers=HEADERS)
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read())["calls"])


def _retrieves(url: str) -> int:
    return _calls(url).get("retrieve", 0)


class _Answers:
    """Batch polls answered to our triggers, whatever the request that answered them (a retrieve, or
    a List page shared by many triggers): one per batch a trigger's tracker was told about. Theirs make
    one retrieve per batch per poll, so their count is the emulator's retrieve count."""

    def __init__(self) -> None:
        from airflow_provider_claude_batch.wait import tracker as waiting

        self.count = 0
        real = waiting.WaitTracker.after_success

        def counting(tracker: Any, snapshots: list[Any], now: float) -> Any:
            self.count += len(snapshots)
            return real(tracker, snapshots, now)

        waiting.WaitTracker.after_success = counting  # type: ignore[method-assign,assignment]


class _GcPauses:
    """Every full garbage collection's end (perf_counter) and duration: a full one walks every object of the process."""

    def __init__(self) -> None:
        self.started = 0.0
        self.full: list[tuple[float, float]] = []
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif info["generation"] == 2:
            now = time.perf_counter()
            self.full.append((now, now - self.started))

    def between(self, start: float, end: float) -> list[float]:
        return [pause for at, pause in self.full if start <= at <= end]


class _Ticker:
    """Sleeps TICK_SECONDS again and again; the worst lateness is the longest event-loop stall."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.late: list[tuple[float, float]] = []  # (slept at, woke at) of the ticks more than 5 ms late

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK_SECONDS)
            woke = time.perf_counter()
            lateness = woke - started - TICK_SECONDS
            self.worst = max(self.worst, lateness)
            if lateness > 0.005:
                self.late.append((started, woke))

    def worst_besides(self, pauses: list[tuple[float, float]], start: float, end: float) -> float:
        """The longest stall between `start` and `end` in which none of these (end, duration) pauses fell."""
        clear = [
            woke - slept - TICK_SECONDS
            for slept, woke in self.late
            if start <= slept <= end and not any(slept <= at and at - pause <= woke for at, pause in pauses)
        ]
        return max(clear, default=0.005)


def _triggers(kind: str, batch_ids: list[str]) -> list[Any]:
    deadline = time.time() + 3600
    if kind == OURS:
        from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger

        return [
            ClaudeBatchTrigger([b], deadline=deadline, poll_interval=POLL_SECONDS, max_poll_interval=POLL_SECONDS)
            for b in batch_ids
        ]
    from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

    return [AnthropicBatchTrigger("anthropic_default", b, POLL_SECONDS, deadline) for b in batch_ids]


async def _warm_up(kind: str, batch_id: str) -> None:
    """Load the SDK and the lazily imported modules once, so that they are not counted per trigger."""
    if kind == OURS:
        from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

        hook = ClaudeBatchHook()
        await hook.aretrieve_batch(batch_id)
        await hook.aclose()
    else:
        from airflow.providers.anthropic.hooks.anthropic import AnthropicHook

        await asyncio.to_thread(AnthropicHook().get_batch, batch_id)


async def _child(kind: str, url: str, emulator_pid: int, batch_ids: list[str]) -> dict[str, float]:
    await _warm_up(kind, batch_ids[0])
    triggers = _triggers(kind, batch_ids)
    base_rss = _rss()
    ticker = _Ticker()
    tick_task = asyncio.create_task(ticker.run())
    answers = _Answers() if kind == OURS else None

    async def polled() -> int:
        return answers.count if answers is not None else await asyncio.to_thread(_retrieves, url)

    polls_before = await polled()

    async def drive(trigger: Any) -> None:
        async for _ in trigger.run():
            raise RuntimeError("a batch ended during the benchmark: it must stay in progress")

    gc_pauses = _GcPauses()
    started = time.perf_counter()
    tasks = []
    for trigger in triggers:  # one per turn of the loop, as Airflow's triggerer creates them
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(drive(trigger)))
    # Every trigger has polled once when the count (in the emulator process, for theirs) says so.
    while await polled() - polls_before < len(triggers):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    startup_seconds = time.perf_counter() - started
    await asyncio.sleep(SETTLE_POLLS * POLL_SECONDS)  # into the steady state
    startup_stall, settled = ticker.worst, time.perf_counter()
    ticker.worst = 0.0
    polls = await polled()
    calls = await asyncio.to_thread(_calls, url)
    cpu, emulator_cpu, wall = time.process_time(), process_seconds(emulator_pid), time.perf_counter()
    await asyncio.sleep(WINDOW_SECONDS)
    cpu, ended = time.process_time() - cpu, time.perf_counter()
    wall = ended - wall
    emulator_cpu = process_seconds(emulator_pid) - emulator_cpu
    polls = await polled() - polls
    calls_after = await asyncio.to_thread(_calls, url)
    stall = ticker.worst
    gc.callbacks.remove(gc_pauses.callback)
    rss = _rss() - base_rss
    objects = len(gc.get_objects())
    for task in [*tasks, tick_task]:
        task.cancel()
    await asyncio.gather(*tasks, tick_task, return_exceptions=True)
    cycles = polls / len(triggers)
    window_gcs, startup_gcs = gc_pauses.between(settled, ended), gc_pauses.between(started, settled)
    startup_besides_gcs = ticker.worst_besides(gc_pauses.full, started, settled)
    window_besides_gcs = ticker.worst_besides(gc_pauses.full, settled, ended)
    return {
        "cycles": cycles,
        "cpu_per_cycle": cpu / cycles if cycles else float("inf"),
        "cpu_share": cpu / wall,
        "emulator_cpu_share": emulator_cpu / wall,
        "kb_per_trigger": rss / len(triggers) / 1e3,
        "stall_ms": stall * 1000,
        "stall_besides_gcs_ms": window_besides_gcs * 1000,
        "full_gcs": len(window_gcs),
        "full_gc_ms": max(window_gcs, default=0) * 1000,
        "tracked_objects": objects,
        "startup_seconds": startup_seconds,
        "startup_stall_ms": startup_stall * 1000,
        "startup_full_gcs": len(startup_gcs),
        "startup_full_gc_ms": max(startup_gcs, default=0) * 1000,
        "startup_stall_besides_gcs_ms": startup_besides_gcs * 1000,
        "list_calls_per_cycle": (calls_after.get("list", 0) - calls.get("list", 0)) / cycles if cycles else 0.0,
        "retrieves_per_cycle": (calls_after.get("retrieve", 0) - calls.get("retrieve", 0)) / cycles if cycles else 0.0,
    }


async def _poll_costs(url: str, batch_id: str, calls: int = 300) -> dict[str, float]:
    """CPU ms of one poll, one at a time: where a poll's CPU goes, whoever makes it."""
    import anthropic
    import msgspec

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

    hook = ClaudeBatchHook()
    client = (await hook.get_async_conn()).with_options(max_retries=0)
    sync_client = anthropic.Anthropic(base_url=url, api_key="emulator-key", max_retries=0)
    raw = httpx2.AsyncClient(base_url=url, headers=HEADERS)
    path = f"/v1/messages/batches/{batch_id}"

    async def sdk_async() -> object:
        return await client.messages.batches.retrieve(batch_id)

    async def sdk_sync_in_thread() -> object:
        return await asyncio.to_thread(sync_client.messages.batches.retrieve, batch_id)

    async def raw_async() -> object:
        return msgspec.json.decode((await raw.get(path)).content)

    ways = {OUR_POLL: sdk_async, THEIR_POLL: sdk_sync_in_thread, BARE_POLL: raw_async}
    costs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(3):  # interleaved rounds
        for name, way in ways.items():
            await way()
            cpu = time.process_time()
            for _ in range(calls):
                await way()
            costs[name].append((time.process_time() - cpu) / calls * 1000)
    await hook.aclose()
    await raw.aclose()
    sync_client.close()
    return {name: statistics.median(values) for name, values in costs.items()}


def main() -> None:
    if sys.argv[1:2] == ["--poll-costs"]:
        print(json.dumps(asyncio.run(_poll_costs(sys.argv[2], sys.argv[3]))))
        return
    kind, url, emulator_pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(_child(kind, url, emulator_pid, json.loads(sys.stdin.read())))))


if __name__ == "__main__":
    main()
