"""Run one landing in its own process (so a test can SIGKILL it, or read its peak memory).

Usage: python -m tests.landing_probe OUTPUT BATCH_ID [BATCH_ID ...]; the connection comes from the
environment (and `LandingSettings.concurrency` from CLAUDE_BATCH_PROBE_CONCURRENCY, default 1). Prints one JSON line: the manifest's counts and the process's peak RSS growth.
"""

from __future__ import annotations

import json
import os
import sys


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def main() -> None:
    output, *batch_ids = sys.argv[1:]
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.output.land import LandingSettings, land_results
    from airflow_provider_claude_batch.storage import as_path

    hook = ClaudeBatchHook()
    path = as_path(output)
    hook.retrieve_batch(batch_ids[0])  # warm up: the SDK and clients are loaded before measuring
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    baseline = _status("VmRSS")
    print("LANDING", flush=True)
    concurrency = int(os.environ.get("CLAUDE_BATCH_PROBE_CONCURRENCY", "1"))
    manifest = land_results(hook, batch_ids, path, LandingSettings(concurrency=concurrency))
    print(
        json.dumps(
            {"requests": manifest["requests"], "counts": manifest["counts"], "peak_growth": _status("VmHWM") - baseline}
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
