"""Prepare and create one large JSONL input in its own process (so a test can read its peak memory).

Usage: python -m tests.submit_probe JSONL MAX_REQUESTS_PER_BATCH [SPILL_ABOVE_REQUESTS]; the connection comes
from the environment. By default the input spills past one batch, as a submitting task's does.
The same steps as a submitting task: validate and serialize (`prepare_requests`), the prompt-caching pass,
preflight (`run_preflight`: model lookups, token counts, the estimate), split (`plan_batches`), then each batch's body streamed to the API (`create_batch_streamed`). Prints one
JSON line: what was created and the process's peak RSS growth over its baseline (SDK loaded).
"""

from __future__ import annotations

import json
import sys
import time


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main() -> None:
    jsonl, max_requests = sys.argv[1], int(sys.argv[2])
    spill_above = int(sys.argv[3]) if len(sys.argv) > 3 else max_requests
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.input.read import iter_jsonl
    from airflow_provider_claude_batch.preflight.run import run_preflight
    from airflow_provider_claude_batch.requests.caching import add_cache_breakpoints
    from airflow_provider_claude_batch.requests.hashing import prepare_requests
    from airflow_provider_claude_batch.requests.plan import plan_batches

    hook = ClaudeBatchHook()
    hook.list_batches(limit=1)  # warm up: the SDK and its client are loaded before measuring
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    baseline = _status("VmRSS")
    started = time.perf_counter()
    with open(jsonl, "rb") as file:
        prepared, problems, bad = prepare_requests(iter_jsonl(file), spill_above_requests=spill_above)
    if bad:
        raise SystemExit(f"bad input: {problems}")
    prepared, _ = add_cache_breakpoints(prepared)
    estimate = run_preflight(hook, prepared)
    plans = plan_batches(prepared, max_requests=max_requests)
    prepared_at = _status("VmHWM") - baseline
    ids = [hook.create_batch_streamed(prepared.iter_body(p.first, p.stop), p.body_bytes).id for p in plans]
    print(
        json.dumps(
            {
                "requests": len(prepared),
                "batches": len(ids),
                "largest_body": max(p.body_bytes for p in plans),
                "spilled": prepared.spilled,
                "fingerprint": prepared.fingerprint,
                "estimated_input_tokens": estimate.input_tokens,
                "seconds": time.perf_counter() - started,
                "peak_growth_prepared": prepared_at,
                "peak_growth": _status("VmHWM") - baseline,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
