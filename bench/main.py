"""Run the benchmarks side by side and write BENCHMARKS.md (ratios measured in one run)."""

from __future__ import annotations

import argparse
import platform
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench import caching, deadline, emulator_alone, land, parse_cost, scale, submit, triggerer

if TYPE_CHECKING:
    from collections.abc import Iterator

OUT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="repetitions of each figure (min and median)")
    args = parser.parse_args()
    print("Figure 1: DAG-parse cost ...", flush=True)
    costs = parse_cost.measure(args.repeat)
    print("Figure 5: the emulator alone ...", flush=True)
    floor = emulator_alone.measure(max(3, args.repeat // 2))
    print("Figure 2: submit 100,000 requests ...", flush=True)
    with _emulator() as (pid, url):
        submitted = submit.measure(url, max(3, args.repeat // 2))
    print("Figure 3: land 100,000 results ...", flush=True)
    with _emulator() as (pid, url):
        landed = land.measure(url, pid, max(3, args.repeat // 2))
    print("Figure 4: 1,000 and 10,000 waiting triggers in one event loop ...", flush=True)
    with _emulator() as (pid, url):
        waiting = triggerer.measure(url, pid, max(2, args.repeat // 3))
    print("Figure 6: prompt caching on the batch price ...", flush=True)
    cached = caching.measure(max(3, args.repeat // 2))
    print("Figure 7: 2,000 requests with 5% stragglers, by a deadline ...", flush=True)
    with _emulator() as (pid, url):
        by_deadline = deadline.measure(url)
    print("Figure 8: submit and land 10,000 to 1,000,000 requests ...", flush=True)
    scaled = scale.measure()
    ours = costs[0]
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `bench/run --repeat {args.repeat}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"(Python {platform.python_version()}, {platform.machine()}, 2 cores, shared and noisy: compare the "
        "ratios, which are measured in the same run, rather than the absolute times). min / median over the "
        "repetitions.",
        "",
        "## 1. DAG-parse cost",
        "",
        "Extra import time and modules of each package's DAG-facing modules over `import airflow.sdk`, each "
        "probe in a fresh interpreter, the packages interleaved.",
        "",
        "| package | modules imported | added ms (min / median) | x ours (median) | imports `anthropic` |",
        "|---|---|---|---|---|",
    ]
    for cost in costs:
        ratio = cost.median_ms / ours.median_ms if ours.median_ms else float("nan")
        modules = ", ".join(parse_cost.PACKAGES[cost.label])
        sdk = "yes" if cost.imports_sdk else "no"
        lines.append(
            f"| {cost.label}: {modules} | {cost.modules} | "
            f"{cost.min_ms:.1f} / {cost.median_ms:.1f} | {ratio:.1f} | {sdk} |"
        )
    lines += [
        "",
        "Target: ours at or below common-ai's. "
        + (
            "Met."
            if ours.median_ms <= costs[2].median_ms
            else "Missed in this run: see the module count and `python -X importtime` of the operator module."
        ),
        "",
        "## 2. Submit 100,000 requests",
        "",
        f"From a JSONL file of 100,000 requests ({submitted.body_mb:.0f} MB as a create body) to a batch ID, each "
        "contender in its own process against the same emulator process; peak RSS growth is the process's own.",
        "",
        "| contender | seconds (min / median) | x raw POST (median) | peak RSS growth MB (median) | x body size |",
        "|---|---|---|---|---|",
        *[
            f"| {kind} | {min(submitted.seconds[kind]):.2f} / {submit.median(submitted.seconds[kind]):.2f} | "
            f"{submit.median(submitted.seconds[kind]) / submit.median(submitted.seconds['raw POST']):.2f} | "
            f"{submit.median(submitted.peak_mb[kind]):.0f} | "
            f"{submit.median(submitted.peak_mb[kind]) / submitted.body_mb:.2f} |"
            for kind in submit.CONTENDERS
        ],
        "",
        "Targets: ours within 1.2x of the raw POST, and peak RSS under 2x the body size. Ours validates every "
        "request (the others validate nothing) and serializes each request once into one buffer, streamed as "
        "the body. " + _verdict(submitted),
        "",
        _preflight_verdict(submitted),
        "",
        *_land_section(landed),
        *triggerer.section(waiting),
        "## 5. The emulator alone",
        "",
        "The floor under the submit and land figures: a raw POST of a pre-serialized body and a plain streamed "
        "copy of its results to a file, over loopback, to the emulator in its own process.",
        "",
        "| what | size | seconds (min / median) |",
        "|---|---|---|",
        f"| create, 100,000 requests, raw POST | {floor.body_mb:.0f} MB | "
        f"{emulator_alone.summary(floor.create_seconds)} |",
        f"| results, 100,000 lines, streamed copy to a file | {floor.results_mb:.0f} MB | "
        f"{emulator_alone.summary(floor.copy_seconds)} |",
        "",
        *caching.section(cached),
        "",
        *deadline.section(by_deadline),
        "",
        *scale.section(scaled),
    ]
    OUT.write_text("\n".join(lines))
    print(OUT.read_text())
    return 0


@contextmanager
def _emulator() -> Iterator[tuple[int, str]]:
    """A fresh emulator process per figure: no figure pays for the batches another one left behind."""
    process, url = emulator_alone.start_emulator()
    try:
        yield process.pid, url
    finally:
        process.terminate()
        process.wait(timeout=30)


_WRITES = {
    "plain copy": "the results JSONL as served",
    "SDK per-line": "one JSON line per parsed SDK object",
    "common-ai 1.0.0": "one JSONL row per request, in place; manifest to XCom",
    "ours": "raw JSONL, flat table, failures, manifest with sha256s; staged, fsynced, published atomically",
}


def _land_section(figure: land.LandFigure) -> list[str]:
    big, small = land.SIZES[-1], land.SIZES[0]
    copy, ours = figure.median("plain copy"), figure.median("ours")
    lines = [
        "## 3. Land 100,000 results",
        "",
        f"From an ended batch to files on local disk, each contender in its own process against the same emulator "
        f"process, on the same batch ({big:,} results, {figure.results_mb[big]:.0f} MB of JSONL; and one of "
        f"{small:,}), contenders interleaved. common-ai runs its operator's `execute_complete` on a success event "
        "(its state record written as its `execute` would have); the SDK per-line contender iterates "
        "`client.messages.batches.results(id)` and writes each object back as JSON. Peak RSS growth is the "
        "process's own; emulator CPU is the emulator process's CPU while the contender ran.",
        "",
        f"| contender | writes | {big // 1000}k: seconds (min / median) | x plain copy | x ours | CPU s | "
        f"emulator CPU s | {small // 1000}k: seconds (median) | "
        f"peak RSS growth MB, {small // 1000}k / {big // 1000}k |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in land.CONTENDERS:
        median = figure.median(kind)
        lines.append(
            f"| {kind} | {_WRITES[kind]} | {figure.low(kind):.2f} / {median:.2f} | {median / copy:.2f} | "
            f"{median / ours:.2f} | {figure.median(kind, what='cpu_seconds'):.2f} | "
            f"{figure.median(kind, what='emulator_cpu_seconds'):.2f} | {figure.median(kind, small):.2f} | "
            f"{figure.median(kind, small, 'peak_mb'):.1f} / {figure.median(kind, big, 'peak_mb'):.1f} |"
        )
    faster = figure.median("common-ai 1.0.0") / ours
    to_copy = ours / copy
    growth = figure.median("ours", big, "peak_mb") - figure.median("ours", small, "peak_mb")
    id_set = (big - small) * land.ID_SET_BYTES_PER_RESULT / 1e6
    copy_emulator = figure.median("plain copy", what="emulator_cpu_seconds")
    ours_emulator = figure.median("ours", what="emulator_cpu_seconds")
    lines += [
        "",
        "Targets: ours at least 10x faster than common-ai, within 1.5x of the plain copy, and peak RSS that does "
        "not depend on the number of results. "
        f"Against common-ai: {'met' if faster >= 10 else 'missed'} ({faster:.1f}x faster). "
        f"Against the plain copy: {'met' if to_copy <= 1.5 else 'missed'} ({to_copy:.2f}x its time; repetition by "
        f"repetition {', '.join(f'{r:.2f}x' for r in figure.ratios())}, while other processes used "
        f"{', '.join(f'{share:.0%}' for share in figure.others_share)} of the machine's cores). "
        f"Memory: {'met' if growth - id_set < 8 else 'missed'} ({growth:+.1f} MB from {small:,} to {big:,} results, "
        f"of which about {id_set:.0f} MB is the set of the batch's custom_ids that duplicates are found with, "
        "bounded by the API's 100,000 requests per batch; the test suite holds the rest under 8 MB).",
        "",
        f"The emulator is not the bottleneck: serving the {big:,} results costs it {copy_emulator:.2f} s of CPU "
        f"(the plain copy takes {copy:.2f} s: the copy is bound by the emulator, the limit of this setup), while "
        f"ours spends {figure.median('ours', what='cpu_seconds'):.2f} s of CPU of its own in its {ours:.2f} s "
        f"(the emulator: {ours_emulator:.2f} s meanwhile).",
        "",
        "Beside a CPU-heavy neighbour the ratio grows: the copy's time is the emulator's serving, ours is its own "
        "CPU (about three times the copy's) and the emulator's on the same two cores, and a neighbour takes its share "
        "of both. Measured while developing (2026-12-07, figure 3's contenders run side by side with a busy loop "
        "on one of the two cores): 1.42x to 1.57x, the medians of four runs of 7 repetitions; beside the test suite "
        "or figure 8's 1,000,000 requests, 1.66x and 1.67x. A figure-3 run is only a measurement of the "
        "contenders when the line above shows the other processes near 0%.",
    ]
    if to_copy > 1.5 or faster < 10:
        shares = "; ".join(f"{label} {share:.0%}" for label, share in figure.ours_profile.items())
        lines += [
            "",
            f"Where ours' time goes (cProfile of one landing of the {big:,} results in the same run, shares of own "
            f"time; cProfile inflates the many small Python calls): {shares}. Ours does per result what the copy does "
            "not (decode the line into typed structs, a block of lines per msgspec call; build the table row; encode "
            "it), and per byte it hashes the raw and table files for the manifest and hands them to the disk; a "
            "plain copy does none of that. One thread receives the stream, folds it and writes and hashes every "
            "file (the socket's buffer keeps the emulator sending meanwhile), so cProfile sees all of it. With the "
            "emulator on the same two cores the landing is bound by CPU, not by waiting: measured while developing, "
            "a thread that receives the stream, and one that writes and hashes the files in 1 MB blocks, each cost "
            "more CPU than they saved time (GIL hand-offs, the emulator needing the second core), also with SHA "
            "instructions disabled (sha256 at 0.5 GB/s); what helped was less CPU: no re-chunking copy, lines folded "
            "in cache-sized blocks, usage counted without reading the row back, and the files handed to the disk "
            "every 8 MB as written (the fsync before publishing fell from about 65 ms to 2 ms).",
        ]
    return [*lines, ""]


def _preflight_verdict(figure: submit.SubmitFigure) -> str:
    ours = submit.median(figure.seconds["ours"])
    added = submit.median(figure.seconds["ours + preflight"]) - ours
    share = added / ours
    return (
        f"Preflight (target: at most +10% on ours): {'met' if share <= 0.10 else 'missed'} (+{added:.2f} s, "
        f"{share:+.1%} of ours' median). In those runs, preflight itself took "
        f"{submit.median(figure.preflight_seconds):.2f} s (median): one Models API lookup, a stratified sample of "
        "token counts (a few dozen calls for 100,000 requests) and the estimate by size for the rest."
    )


def _verdict(figure: submit.SubmitFigure) -> str:
    time_ratio = submit.median(figure.seconds["ours"]) / submit.median(figure.seconds["raw POST"])
    memory_ratio = submit.median(figure.peak_mb["ours"]) / figure.body_mb
    parts = [
        f"Time: {'met' if time_ratio <= 1.2 else 'missed'} ({time_ratio:.2f}x).",
        f"Memory: {'met' if memory_ratio < 2 else 'missed'} ({memory_ratio:.2f}x).",
    ]
    prepare = submit.median(figure.ours_prepare_seconds)
    parts.append(
        f"Where ours' time goes (measured in the same runs): {prepare:.2f} s of its "
        f"{submit.median(figure.seconds['ours']):.2f} s median is reading, validating and serializing the "
        "100,000 requests before the upload starts; the upload itself costs what the raw POST costs. That "
        "preparation is one pass over the file read in 1 MB blocks: a block whose lines all pass a typed msgspec "
        "decode (the same checks, done in C, a block per call) is appended to the body buffer as written, with "
        "nothing built per line but its custom_id; any other block is checked line by line, and a line that needs "
        "a default filled in is encoded again. The buffer is hashed (sha256, the fingerprint that recognises a "
        "resubmission) on a second thread while later blocks are checked. Nothing is sent "
        "before every line is validated and the fingerprint recorded, so preparation cannot overlap the upload. "
        + (
            ""
            if time_ratio <= 1.2
            else "Why the time target is missed in this run: the preparation above (reading the file, the typed "
            "decode, the duplicate check and the per-request facts preflight reads; the sha256 overlapped on a "
            "second core only when one is free) is a fixed cost in seconds, while the raw POST is only as long as "
            "the emulator takes to accept the body: the faster the emulator, the larger that fixed cost's share."
        )
    )
    return " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
