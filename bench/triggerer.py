"""Figure 4, triggerer load: 1,000 and 10,000 batches waited on in one asyncio event loop, as a triggerer runs them.

Each contender runs in its own process against one emulator process (its own CPU is measured from
/proc too): one trigger instance per in-progress batch, started one per turn of the loop as
Airflow's triggerer starts them (`create_triggers`) and each driven the way it drives them (`async
for event in trigger.run()`), all with the same short poll interval so that several poll cycles
fall in the measured window. A ticker coroutine sleeps 10 ms at a time and records how late it
wakes up: that is how long the event loop was blocked.
- anthropic provider 1.2.0: `AnthropicBatchTrigger` (the sync SDK in `asyncio.to_thread`), at
  1,000 batches only: one retrieve per batch per poll makes its start-up alone last about 15 min at 10,000;
- ours: `ClaudeBatchTrigger` (the SDK's async client), at 1,000 and 10,000.
Start-up (every trigger's first poll, then the poll intervals that follow it, while the garbage
collector catches up with the objects the start-up made) is reported apart from the steady window.
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

from airflow_provider_claude_batch.wait.listing import LIST_THRESHOLD, PAGE_LIMIT
from bench.emulator_alone import HEADERS

CONTENDERS = ("anthropic provider 1.2.0", "ours")
THEIRS, OURS = CONTENDERS
# The waiting batches each contender is measured at (theirs' start-up at 10,000 would take ~15 min).
SIZES = {THEIRS: (1_000,), OURS: (1_000, 10_000)}
# Several poll cycles in the window, and under the emulator's 5 s keep-alive, so that connections
# are reused between polls as they are against the API.
POLL_SECONDS = 2.0
WINDOW_SECONDS = 20.0
# Start-up ends this many poll intervals after every trigger has polled once: the first cycles and
# the full garbage collections that the start-up's new objects bring about belong to it.
SETTLE_POLLS = 3
TICK_SECONDS = 0.01
OUR_POLL = "SDK async client (ours)"
THEIR_POLL = "SDK sync client in a thread (anthropic provider)"
BARE_POLL = "bare async HTTP GET + msgspec (no SDK)"


def row(kind: str, size: int) -> str:
    """The figure's row for a contender at a size."""
    return f"{kind}, {size:,}"


@dataclass
class TriggerFigure:
    poll_seconds: float
    window_seconds: float
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # per row
    sizes: dict[str, int] = field(default_factory=dict)  # each row's waiting batches
    poll_ms: dict[str, float] = field(default_factory=dict)

    def median(self, label: str, name: str) -> float:
        return float(statistics.median(r[name] for r in self.results[label]))

    def low(self, label: str, name: str) -> float:
        return min(r[name] for r in self.results[label])

    def high(self, label: str, name: str) -> float:
        return max(r[name] for r in self.results[label])


def create_waiting_batches(url: str, count: int) -> list[str]:
    """Batches that stay in_progress for a day (the emulator's processing time is set for them only)."""
    from airflow_provider_claude_batch.emulator import EmulatorControl

    control = EmulatorControl(url, HEADERS["x-api-key"])
    before = control.configure()["processing_seconds"]
    control.configure(processing_seconds=86_400)
    request = {
        "custom_id": "wait-0",
        "params": {"model": "claude-sonnet-5-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    }
    try:
        return control.create_batches(count, [request])
    finally:
        control.configure(processing_seconds=before)


def measure(url: str, emulator_pid: int, repeat: int, sizes: dict[str, tuple[int, ...]] | None = None) -> TriggerFigure:
    """Every contender at each of its sizes, `repeat` times, interleaved; each run waits on the newest batches."""
    sizes = SIZES if sizes is None else sizes
    batch_ids = create_waiting_batches(url, max(n for counts in sizes.values() for n in counts))
    env = {
        **os.environ,
        "AIRFLOW_CONN_ANTHROPIC_DEFAULT": json.dumps(
            {"conn_type": "anthropic", "host": url, "password": "emulator-key"}
        ),
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(
            {"conn_type": "claude_batch", "host": url, "password": "emulator-key"}
        ),
    }
    figure = TriggerFigure(POLL_SECONDS, WINDOW_SECONDS)
    for _ in range(repeat):
        for kind, counts in sizes.items():
            for count in counts:
                # The newest batches head the List endpoint's pages, as a triggerer's batches of the day do.
                out = subprocess.run(
                    [sys.executable, "-m", "bench.triggerer", "--child", kind, url, str(emulator_pid)],
                    input=json.dumps(batch_ids[-count:]),
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=1800,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{kind} at {count:,} failed: {out.stderr[-3000:]}")
                result = json.loads(out.stdout.strip().splitlines()[-1])
                figure.results.setdefault(row(kind, count), []).append(result)
                figure.sizes[row(kind, count)] = count
    figure.poll_ms = poll_costs(url, batch_ids[-1], env)
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
    cpu, emulator_cpu, wall = time.process_time(), _cpu_of(emulator_pid), time.perf_counter()
    await asyncio.sleep(WINDOW_SECONDS)
    cpu, ended = time.process_time() - cpu, time.perf_counter()
    wall = ended - wall
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
    window_gcs, startup_gcs = gc_pauses.between(settled, ended), gc_pauses.between(started, settled)
    return {
        "cycles": cycles,
        "cpu_per_cycle": cpu / cycles if cycles else float("inf"),
        "cpu_share": cpu / wall,
        "emulator_cpu_share": emulator_cpu / wall,
        "kb_per_trigger": rss / len(triggers) / 1e3,
        "stall_ms": stall * 1000,
        "full_gcs": len(window_gcs),
        "full_gc_ms": max(window_gcs, default=0) * 1000,
        "tracked_objects": objects,
        "startup_seconds": startup_seconds,
        "startup_stall_ms": startup_stall * 1000,
        "startup_full_gcs": len(startup_gcs),
        "startup_full_gc_ms": max(startup_gcs, default=0) * 1000,
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


def section(figure: TriggerFigure) -> list[str]:
    """The BENCHMARKS.md section."""
    theirs, small, large = row(THEIRS, SIZES[THEIRS][0]), row(OURS, SIZES[OURS][0]), row(OURS, SIZES[OURS][-1])
    labels = [label for label in (theirs, small, large) if label in figure.results]
    runs = len(figure.results[small])
    lines = [
        "## 4. Triggerer load: 1,000 and 10,000 waiting batches in one event loop",
        "",
        "In-progress batches, one trigger each, started one per turn of the loop as Airflow's triggerer starts "
        "them and driven the way it drives them (`async for event in trigger.run()`) in one asyncio event loop, "
        "each contender in its own process against the same emulator process (holding 10,000 in-progress "
        "batches; a run waits on the newest ones), poll interval "
        f"{figure.poll_seconds:g} s for all. Ours at 1,000 and 10,000 waiting batches; the anthropic provider at "
        "1,000 only: it retrieves each batch in turn, so its start-up alone (every trigger polled once) would "
        "last about 15 minutes at 10,000. Start-up lasts until every trigger has polled once and "
        f"{SETTLE_POLLS} poll intervals more; then the steady window of {figure.window_seconds:g} s. A ticker "
        f"coroutine sleeps {TICK_SECONDS * 1000:g} ms at a time and its worst lateness is the longest stall of "
        f"the loop. {runs} runs per row, interleaved; median (min or max where it says so).",
        "",
        "| contender, waiting batches | poll cycles in the window | CPU s per cycle (min / median) | "
        "CPU ms per batch per poll cycle | RSS per waiting trigger, kB | longest stall, ms (median / max) | "
        "full GCs in the window (longest, ms) | start-up: s until every trigger polled once | start-up: longest "
        "stall ms (median / max), full GCs (longest ms) | List calls / retrieves per cycle | emulator CPU, share "
        "of one core |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        med = {name: figure.median(label, name) for name in figure.results[label][0]}
        high = {name: figure.high(label, name) for name in figure.results[label][0]}
        lines.append(
            f"| {label} | {med['cycles']:.1f} | {figure.low(label, 'cpu_per_cycle'):.3f} / "
            f"{med['cpu_per_cycle']:.3f} | {med['cpu_per_cycle'] / figure.sizes[label] * 1000:.3f} | "
            f"{med['kb_per_trigger']:.1f} | {med['stall_ms']:.0f} / {high['stall_ms']:.0f} | "
            f"{med['full_gcs']:.0f} ({high['full_gc_ms']:.0f}) | {med['startup_seconds']:.1f} | "
            f"{med['startup_stall_ms']:.0f} / {high['startup_stall_ms']:.0f}, "
            f"{med['startup_full_gcs']:.0f} ({high['startup_full_gc_ms']:.0f}) | "
            f"{med['list_calls_per_cycle']:.2f} / {med['retrieves_per_cycle']:.1f} | {med['emulator_cpu_share']:.0%} |"
        )
    per_batch = {label: figure.median(label, "cpu_per_cycle") / figure.sizes[label] for label in labels}
    worst = {label: figure.high(label, "stall_ms") for label in labels}
    ours_worst = max(worst[small], worst.get(large, 0.0))
    lines += ["", "Targets:"]
    if theirs in per_batch:
        ratio = per_batch[theirs] / per_batch[small]
        lines.append(
            f"- ours at least 3x less CPU per poll than the anthropic provider's trigger (at 1,000): "
            f"{'met' if ratio >= 3 else 'missed'} (theirs spends {ratio:.1f}x ours' CPU per batch per poll cycle);"
        )
    lines.append(
        f"- no stall over 100 ms in the steady window: {'met' if ours_worst <= 100 else 'missed'} (longest "
        f"{worst[small]:.0f} ms in any run at 1,000"
        + (f", {worst[large]:.0f} ms at 10,000);" if large in worst else ");")
    )
    if large in per_batch:
        scale = per_batch[large] / per_batch[small]
        lines.append(
            f"- at 10,000, CPU per batch per poll cycle no worse than at 1,000: "
            f"{'met' if scale <= 1.05 else 'missed'} ({per_batch[large] * 1000:.3f} ms against "
            f"{per_batch[small] * 1000:.3f} ms, {scale:.2f}x)."
        )
    costs = "; ".join(f"{name} {ms:.2f} ms" for name, ms in figure.poll_ms.items())
    bare, sync = figure.poll_ms[BARE_POLL], figure.poll_ms[THEIR_POLL]
    lines += [
        "",
        f"Where the CPU of a poll goes, measured in the same run, one request at a time: {costs}. Theirs makes "
        "one HTTP request through the SDK per batch per poll; even a bare async GET without the SDK costs "
        f"{bare / sync:.0%} of their poll, so no design with one request per batch per poll could be 3x cheaper. "
        "Ours shares one poller per connection and event loop between all its triggers: polls that fall due "
        "close together (within a fifth of the poll delay) join one cycle, and a cycle that wants "
        f"{LIST_THRESHOLD} or more batches reads the List endpoint ({PAGE_LIMIT:,} batches a page, newest first, "
        "decoded with msgspec into the few fields a wait needs, one page per turn of the loop, stopping once "
        "every wanted batch is found) instead of one retrieve per batch; batches not found there are retrieved. "
        "The poller hands each answer to the trigger's own tracker itself and wakes a trigger only to log a "
        "line or to end its wait: between cycles the waiting triggers hold no timer and are not woken, and a "
        "batch whose listing did not change keeps its snapshot, so a steady cycle allocates almost nothing "
        "that outlives it. Our polls are counted as batches answered to the triggers' trackers (a List page "
        "answers many at once), theirs as the emulator's retrieve calls.",
        "",
    ]
    if large in figure.results:
        objects = figure.median(large, "tracked_objects") / 1000
        lines += [
            f"The stalls: a full garbage collection walks every object of the process (about "
            f"{figure.median(small, 'tracked_objects') / 1000:.0f}k at 1,000 waiting triggers, {objects:.0f}k at "
            "10,000, most of them Airflow's modules and the triggers themselves) and takes hundreds of ms on this "
            "machine. The collector runs one when the objects moved to its oldest generation since the last one "
            "reach a quarter of those it holds: a steady cycle of ours moves next to none, so the window "
            f"has {figure.median(large, 'full_gcs'):.0f} at 10,000 (median). Start-up is another matter: 10,000 "
            "triggers make a few hundred thousand objects that live as long as their waits (the triggers, "
            "their tasks and coroutines, Airflow's loggers, our tracker and watch), and the collections they "
            f"bring about are the start-up's longest stalls ({figure.median(large, 'startup_full_gcs'):.0f} full "
            f"GCs at 10,000, the longest {figure.high(large, 'startup_full_gc_ms'):.0f} ms). Freezing the start-up's "
            "objects (`gc.freeze()`) would remove them, but the garbage collector belongs to the triggerer "
            "process, not to a provider.",
            "",
        ]
    return lines


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        kind, url, emulator_pid = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(asyncio.run(_child(kind, url, emulator_pid, json.loads(sys.stdin.read())))))
        return
    if sys.argv[1:2] == ["--poll-costs"]:
        print(json.dumps(asyncio.run(_poll_costs(sys.argv[2], sys.argv[3]))))
        return
    from bench.emulator_alone import start_emulator

    # python -m bench.triggerer [repeat] [ours=1000,10000] [theirs=1000]: one figure, printed raw
    repeat = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    picked = dict(arg.split("=", 1) for arg in sys.argv[2:])
    names = {"ours": OURS, "theirs": THEIRS}
    sizes = {names[k]: tuple(int(n) for n in v.split(",")) for k, v in picked.items()} if picked else SIZES
    process, url = start_emulator()
    try:
        figure = measure(url, process.pid, repeat, sizes)
    finally:
        process.terminate()
        process.wait(timeout=30)
    for label, results in figure.results.items():
        for result in results:
            print(label, {k: round(v, 3) for k, v in result.items()})
    print(figure.poll_ms)
    print("\n".join(section(figure)))


if __name__ == "__main__":
    main()
