"""Figure 6, prompt caching: the nightly classification example over 10,000 rows with a 3,000-token
shared instruction, in dollars at the standard price, in a batch, and in a batch with automatic caching
(with and without the warm-up), from the manifest each landing writes; plus the time the caching pass
adds to preparing the input, where it finds a shared prefix and where it finds none.

Runs the package's own steps (rows to requests, validate and serialize, caching, create, land) through
the hook against an in-process emulator at its default cache hit rate; the cache is emptied between
variants. Run alone: ``bench/.venv/bin/python -m bench.caching``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROWS = 10_000
MODEL = "claude-sonnet-4-6"  # minimum cacheable 1,024 tokens (Haiku 4.5's 4,096 would leave 3,000 uncached)
INSTRUCTION_TOKENS = 3_000
VARIANTS = ("standard price", "batch", "batch + caching", "batch + caching + warm-up")
_REVIEWS = Path(__file__).resolve().parents[1] / "dags_examples" / "data" / "reviews.jsonl"


@dataclass
class CachingFigure:
    hit_probability: float
    instruction_tokens: int
    dollars: dict[str, float] = field(default_factory=dict)
    hit_rate: dict[str, float | None] = field(default_factory=dict)
    warmup_usd: float = 0.0
    prefixes: int = 0
    pass_seconds: dict[str, list[float]] = field(default_factory=dict)
    prepare_seconds: dict[str, list[float]] = field(default_factory=dict)


def instruction() -> str:
    """A labelling guide of about INSTRUCTION_TOKENS tokens (the emulator counts 4 bytes a token)."""
    rule = "Label the review positive, negative or neutral; sarcasm counts as negative; answer one word. "
    text = ""
    while len(text) < INSTRUCTION_TOKENS * 4:
        text += f"Rule {len(text) // len(rule) + 1}: {rule}"
    return text[: INSTRUCTION_TOKENS * 4]


def rows(count: int = ROWS) -> list[dict[str, Any]]:
    reviews = [json.loads(line) for line in _REVIEWS.read_text().splitlines()]
    return [{"id": f"review-{i:05d}", "text": f"{reviews[i % len(reviews)]['text']} (#{i})"} for i in range(count)]


def prepared_input(count: int = ROWS) -> Any:
    from airflow_provider_claude_batch.input.read import numbered
    from airflow_provider_claude_batch.input.rows import rows_to_requests, template_params_builder
    from airflow_provider_claude_batch.requests.hashing import prepare_requests
    from airflow_provider_claude_batch.requests.prepare import RequestDefaults

    template = {"messages": [{"role": "user", "content": "Review: {text}"}]}
    entries = rows_to_requests(
        numbered(rows(count)), custom_id_column="id", build_params=template_params_builder(template)
    )
    prepared, problems, bad = prepare_requests(entries, RequestDefaults(MODEL, 5, instruction()))
    if bad:
        raise RuntimeError(problems)
    return prepared


def measure(repeat: int = 3) -> CachingFigure:
    from airflow_provider_claude_batch.emulator import EmulatorConfig, EmulatorServer

    config = EmulatorConfig(processing_seconds=0.0)
    figure = CachingFigure(config.cache_hit_probability, INSTRUCTION_TOKENS)
    with EmulatorServer(config) as server:
        os.environ["AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT"] = json.dumps(
            {"conn_type": "claude_batch", "host": server.url, "password": server.api_key, "extra": {"timeout": 600}}
        )
        for variant in VARIANTS[1:]:
            server.control.reset()
            manifest = _run(variant)
            caching = manifest["caching"]
            if variant == "batch":
                figure.dollars["standard price"] = manifest["cost"]["standard_usd"]
                figure.dollars["batch"] = manifest["cost"]["batch_usd"]
                continue
            figure.dollars[variant] = caching["total"]["paid_usd"]
            figure.hit_rate[variant] = caching["total"]["hit_rate"]
            if caching.get("warmup"):
                figure.warmup_usd = caching["total"]["warmup_usd"]
                figure.prefixes = caching["warmup"]["calls"]
    _time_the_pass(figure, repeat)
    return figure


def _run(variant: str) -> dict[str, Any]:
    """One variant end to end: prepare, (cache), (warm up), create, wait, land; its manifest."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.output.land import land_results
    from airflow_provider_claude_batch.requests.caching import add_cache_breakpoints
    from airflow_provider_claude_batch.submit.warmup import warm_cache

    hook = ClaudeBatchHook()
    prepared = prepared_input()
    warmup = None
    if "caching" in variant:
        prepared, plan = add_cache_breakpoints(prepared, warmup="warm-up" in variant)
        if "warm-up" in variant:
            warmup = warm_cache(hook, plan)
    batch = hook.create_batch_streamed(prepared.iter_body(0, len(prepared)), prepared.body_size(0, len(prepared)))
    while hook.retrieve_batch(batch.id).processing_status != "ended":
        time.sleep(0.1)
    with tempfile.TemporaryDirectory() as out:
        return land_results(hook, [batch.id], ObjectStoragePath("file://" + out), warmup=warmup)


def _time_the_pass(figure: CachingFigure, repeat: int) -> None:
    """Seconds the caching pass (with the new fingerprint, when it changes the requests) adds, beside the
    preparation before it: on this input (a shared prefix) and on the submit figure's (none).
    """
    from airflow_provider_claude_batch.input.read import iter_jsonl
    from airflow_provider_claude_batch.requests.caching import add_cache_breakpoints
    from airflow_provider_claude_batch.requests.hashing import prepare_requests
    from bench.submit import write_inputs

    with tempfile.TemporaryDirectory() as tmp:
        jsonl, _, _ = write_inputs(Path(tmp))

        def unshared() -> Any:
            with open(jsonl, "rb") as f:
                return prepare_requests(iter_jsonl(f))[0]

        inputs = (
            (f"{ROWS:,} rows sharing the instruction", prepared_input),
            ("100,000 requests sharing nothing", unshared),
        )
        for _ in range(repeat):
            for name, make in inputs:
                started = time.perf_counter()
                prepared = make()
                _ = prepared.fingerprint
                figure.prepare_seconds.setdefault(name, []).append(time.perf_counter() - started)
                started = time.perf_counter()
                result, _ = add_cache_breakpoints(prepared)
                _ = result.fingerprint
                figure.pass_seconds.setdefault(name, []).append(time.perf_counter() - started)
                del prepared, result


def section(figure: CachingFigure) -> list[str]:
    """The BENCHMARKS.md section."""
    standard = figure.dollars["standard price"]
    lines = [
        "## 6. Prompt caching on the batch price",
        "",
        f"The nightly classification example ({ROWS:,} reviews, `{MODEL}`, `max_tokens=5`) with a "
        f"{figure.instruction_tokens:,}-token shared instruction as the system prompt, submitted, landed and priced "
        "by the package against the emulator at its default batch cache hit probability "
        f"({figure.hit_probability:.0%}); dollars from each landing's manifest (the warm-up's Messages calls "
        "at the standard price included).",
        "",
        "| variant | dollars | x standard price | cache hit rate |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        dollars = figure.dollars[variant]
        rate = figure.hit_rate.get(variant)
        shown = "-" if rate is None else f"{rate:.1%}"
        lines.append(f"| {variant} | ${dollars:.4f} | {dollars / standard:.1%} | {shown} |")
    best = min(figure.dollars["batch + caching"], figure.dollars["batch + caching + warm-up"]) / standard
    lines += [
        "",
        f"Target: batch + caching at most 20% of the standard price. {'Met' if best <= 0.2 else 'Missed'} "
        f"({figure.dollars['batch + caching'] / standard:.1%} without the warm-up, "
        f"{figure.dollars['batch + caching + warm-up'] / standard:.1%} with it; the warm-up cost "
        f"${figure.warmup_usd:.4f} for {figure.prefixes} prefix(es)). A miss writes the prefix again at 2x the "
        "input price (1-hour TTL), so the saving follows the hit rate.",
        "",
        "What the caching pass (`requests/caching.py`, with the new fingerprint when it changes the requests) "
        "adds to preparing the input (reading, validating, serializing, fingerprinting), min / median seconds:",
        "",
        "| input | preparing | caching pass | pass / preparing (median) |",
        "|---|---|---|---|",
    ]
    for name, seconds in figure.pass_seconds.items():
        before = figure.prepare_seconds[name]
        ratio = statistics.median(seconds) / statistics.median(before)
        lines.append(
            f"| {name} | {min(before):.3f} / {statistics.median(before):.3f} | "
            f"{min(seconds):.3f} / {statistics.median(seconds):.3f} | {ratio:.0%} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(section(measure())))
