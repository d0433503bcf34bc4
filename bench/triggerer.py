"""Figure 4, triggerer load: 1,000 batches waited on in one asyncio event loop, as a triggerer runs them.

Each contender runs in its own process against one emulator process (its own CPU is measured from
/proc too): 1,000 trigger instances, one per in-progress batch, each driven the way Airflow's
triggerer drives it (`async for event in trigger.run()`), all with the same short poll interval so
that several poll cycles fall in the measured window. A ticker coroutine sleeps 10 ms at a time
and records how late it wakes up: that is how long the event loop was blocked.
- anthropic provider 1.2.0: `AnthropicBatchTrigger` (the sync SDK in `asyncio.to_thread`);
- ours: `ClaudeBatchTrigger` (the SDK's async client).
Start-up (every trigger's first poll) is reported apart from the steady window.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import httpx2

from bench.emulator_alone import HEADERS

CONTENDERS = ("anthropic provider 1.2.0", "ours")
TRIGGERS = 1_000
# Several poll cycles in the window, and under the emulator's 5 s keep-alive, so that connections
# are reused between polls as they are against the API.
POLL_SECONDS = 2.0
WINDOW_SECONDS = 12.0
TICK_SECONDS = 0.01
OUR_POLL = "SDK async client (ours)"
THEIR_POLL = "SDK sync client in a thread (anthropic provider)"
BARE_POLL = "bare async HTTP GET + msgspec (no SDK)"


@dataclass
class TriggerFigure:
    triggers: int
    poll_seconds: float
    window_seconds: float
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    poll_ms: dict[str, float] = field(default_factory=dict)

    def median(self, kind: str, name: str) -> float:
        return float(statistics.median(r[name] for r in self.results[kind]))

    def low(self, kind: str, name: str) -> float:
        return min(r[name] for r in self.results[kind])


def create_waiting_batches(url: str, count: int) -> list[str]:
    """Batches that stay in_progress for a day (the emulator's processing time is set for them only)."""
    from airflow_provider_claude_batch.emulator import EmulatorControl

    control = EmulatorControl(url, HEADERS["x-api-key"])
    before = control.configure()["processing_seconds"]
    control.configure(processing_seconds=86_400)
    try:
        with httpx2.Client(timeout=60) as client:
            body = json.dumps(
                {
                    "requests": [
                        {
                            "custom_id": "wait-0",
                            "params": {
                                "model": "claude-sonnet-5-5",
                                "max_tokens": 16,
                                "messages": [{"role": "user", "content": "hi"}],
                            },
                        }
                    ]
                }
            )
            return [
                client.post(url + "/v1/messages/batches", content=body, headers=HEADERS).json()["id"]
                for _ in range(count)
            ]
    finally:
        control.configure(processing_seconds=before)


def measure(
    url: str, emulator_pid: int, repeat: int, count: int = TRIGGERS, contenders: tuple[str, ...] = CONTENDERS
) -> TriggerFigure:
    batch_ids = create_waiting_batches(url, count)
    env = {
        **os.environ,
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(
            {"conn_type": "anthropic", "host": url, "password": "emulator-key"}
        ),
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(
            {"conn_type": "claude_batch", "host": url, "password": "emulator-key"}
        ),
    }
    figure = TriggerFigure(count, POLL_SECONDS, WINDOW_SECONDS)
    ids = json.dumps(batch_ids)
    for _ in range(repeat):
        for kind in contenders:
            out = subprocess.run(
                [sys.executable, "-m", "bench.triggerer", "--child", kind, url, str(emulator_pid)],
                input=ids,
                capture_output=True,
                text=True,
                env=env,
                timeout=900,
            )
            if out.returncode != 0:
                raise RuntimeError(f"{kind} failed: {out.stderr[-3000:]}")
            figure.results.setdefault(kind, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    figure.poll_ms = poll_costs(url, batch_ids[0], env)
    return figure


# ---- the child process: one contender ------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of another process (the emulator)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

        waiting.WaitTracker.after_success = counting  # type: ignore[method-assign]


class _GcPauses:
    """Every garbage collection's duration (a full one walks every object of the process)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.full: list[float] = []
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        elif info["generation"] == 2:
            self.full.append(time.perf_counter() - self.started)


class _Ticker:
    """Sleeps TICK_SECONDS again and again; the worst lateness is the longest event-loop stall."""

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(TICK_SECONDS)
            self.worst = max(self.worst, time.perf_counter() - started - TICK_SECONDS)


def _triggers(kind: str, batch_ids: list[str]) -> list[Any]:
    deadline = time.time() + 3600
    if kind == "ours":
        from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger

        return [
            ClaudeBatchTrigger([b], deadline=deadline, poll_interval=POLL_SECONDS, max_poll_interval=POLL_SECONDS)
            for b in batch_ids
        ]
    from airflow.providers.anthropic.triggers.batch import AnthropicBatchTrigger

    return [AnthropicBatchTrigger("anthropic_default", b, POLL_SECONDS, deadline) for b in batch_ids]


async def _warm_up(kind: str, batch_id: str) -> None:
    """Load the SDK and the lazily imported modules once, so that they are not counted per trigger."""
    if kind == "ours":
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
    answers = _Answers() if kind == "ours" else None

    async def polled() -> int:
        return answers.count if answers is not None else await asyncio.to_thread(_retrieves, url)

    polls_before = await polled()

    async def drive(trigger: Any) -> None:
        async for _ in trigger.run():
            raise RuntimeError("a batch ended during the benchmark: it must stay in progress")

    started = time.perf_counter()
    tasks = [asyncio.create_task(drive(t)) for t in triggers]
    # Start-up is over when every trigger has polled once (the count lives in the emulator process).
    while await polled() - polls_before < len(triggers):  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    startup_seconds = time.perf_counter() - started
    startup_stall = ticker.worst
    await asyncio.sleep(POLL_SECONDS)  # into the steady state
    ticker.worst = 0.0
    gc_pauses = _GcPauses()
    polls = await polled()
    calls = await asyncio.to_thread(_calls, url)
    cpu, emulator_cpu, wall = time.process_time(), _cpu_of(emulator_pid), time.perf_counter()
    await asyncio.sleep(WINDOW_SECONDS)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    emulator_cpu = _cpu_of(emulator_pid) - emulator_cpu
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
    return {
        "cycles": cycles,
        "cpu_per_cycle": cpu / cycles if cycles else float("inf"),
        "cpu_share": cpu / wall,
        "emulator_cpu_share": emulator_cpu / wall,
        "kb_per_trigger": rss / len(triggers) / 1e3,
        "stall_ms": stall * 1000,
        "full_gcs": len(gc_pauses.full),
        "full_gc_ms": max(gc_pauses.full, default=0) * 1000,
        "tracked_objects": objects,
        "startup_seconds": startup_seconds,
        "startup_stall_ms": startup_stall * 1000,
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


def poll_costs(url: str, batch_id: str, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.triggerer", "--poll-costs", url, batch_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, url, emulator_pid = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(asyncio.run(_child(kind, url, emulator_pid, json.loads(sys.stdin.read())))))
        return
    if sys.argv[1:2] == ["--poll-costs"]:
        print(json.dumps(asyncio.run(_poll_costs(sys.argv[2], sys.argv[3]))))
        return
    from bench.emulator_alone import start_emulator

    process, url = start_emulator()
    try:
        figure = measure(
            url,
            process.pid,
            int(sys.argv[1]) if len(sys.argv) > 1 else 1,
            int(sys.argv[2]) if len(sys.argv) > 2 else TRIGGERS,
            tuple(sys.argv[3:]) or CONTENDERS,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    for kind, results in figure.results.items():
        for result in results:
            print(kind, {k: round(v, 3) for k, v in result.items()})
    print(figure.poll_ms)


if __name__ == "__main__":
    main()
