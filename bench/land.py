"""Figure 3, land: the results of one ended batch of 10,000 and of 100,000 requests, to local files.

Each contender runs in its own process (so its peak RSS is its own) against one emulator process,
on the same batch, contenders interleaved:
- plain copy: the results stream copied to a file with no parsing at all (the physical limit);
- SDK per-line: `client.messages.batches.results(id)`, one parsed SDK object per line, each
  written back as a JSON line (what a user of the bare SDK writes);
- common-ai 1.0.0: `LLMBatchOperator.execute_complete` on a "success" event, as the operator
  resumes after its trigger: it reads its state record and streams the results into JSONL rows;
- ours: `land_results` through the hook: raw copy, flat table, failures and manifest, each file
  staged and published atomically.
The batch's custom_ids are the ones common-ai's operator would have given it (`{key16}-{index}`),
so that all four land the very same batch as their own.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import httpx2
import msgspec

from bench.child import run_child
from bench.emulator_alone import HEADERS
from bench.neighbours import Neighbours, process_seconds

CONTENDERS = ("plain copy", "SDK per-line", "common-ai 1.0.0", "ours")
SIZES = (10_000, 100_000)
DAG_ID, TASK_ID, RUN_ID = "bench", "land", "manual__bench"
# One custom_id of this batch's length in the set landing checks duplicates with (as the test suite counts it).
ID_SET_BYTES_PER_RESULT = 112

_RUNNER = r"""
import json, os, sys, time
def status(name):
    for line in open("/proc/self/status"):
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
kind, url, batch_id, count, out, dag, task, run = sys.argv[1:9]
count = int(count)
import anthropic, httpx2
from airflow.sdk import ObjectStoragePath
if kind == "common-ai 1.0.0":
    from types import SimpleNamespace
    from airflow.providers.common.ai.batch import state
    from airflow.providers.common.ai.operators.llm_batch import LLMBatchOperator
    result_path = ObjectStoragePath("file://" + out)
    key = state.compute_identity_key(dag_id=dag, task_id=task, run_id=run, map_index=-1)
    # The record its execute() wrote when it submitted the batch (what execute_complete reads back).
    state.write_submitted(result_path, key=key, input_fingerprint="0" * 64, output_schema_digest="0" * 64,
                          intent_at=None, adapter="anthropic", llm_conn_id="llm",
                          model_id="anthropic:claude-sonnet-5-5", output_type_ref=None, batch_id=batch_id,
                          provider_input_ref=None, request_count=count, submitted_at="2026-01-01T00:00:00+00:00")
    operator = LLMBatchOperator(task_id=task, requests=["unused"], result_path=str(result_path), llm_conn_id="llm",
                                model_id="anthropic:claude-sonnet-5-5")
    context = {"task_instance": SimpleNamespace(dag_id=dag, task_id=task, run_id=run, map_index=-1)}
if kind == "ours":
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.output.land import land_results
open("/proc/self/clear_refs", "w").write("5")
base = status("VmRSS")
cpu = time.process_time()
started = time.perf_counter()
if kind == "plain copy":
    with httpx2.Client(timeout=600) as client, open(out + "/results.jsonl", "wb") as target:
        with client.stream("GET", f"{url}/v1/messages/batches/{batch_id}/results",
                           headers={"x-api-key": "emulator-key", "anthropic-version": "2023-06-01"}) as response:
            for chunk in response.iter_bytes(1 << 20):
                target.write(chunk)
    landed = count
elif kind == "SDK per-line":
    client = anthropic.Anthropic(base_url=url, api_key="emulator-key", max_retries=0, timeout=600)
    landed = 0
    with open(out + "/results.jsonl", "w") as target:
        for item in client.messages.batches.results(batch_id):
            target.write(item.to_json(indent=None) + "\n")
            landed += 1
elif kind == "common-ai 1.0.0":
    manifest = operator.execute_complete(context, {"status": "success", "batch_id": batch_id, "counts": {}})
    landed = manifest["counts"]["succeeded"] + manifest["counts"]["errored"]
else:
    manifest = land_results(ClaudeBatchHook(), [batch_id], ObjectStoragePath("file://" + out))
    landed = manifest["requests"]
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "cpu_seconds": time.process_time() - cpu,
                  "peak_growth": status("VmHWM") - base, "landed": landed}))
"""


@dataclass
class LandFigure:
    results_mb: dict[int, float] = field(default_factory=dict)
    seconds: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu_seconds: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    emulator_cpu_seconds: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    peak_mb: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    # Per repetition at the larger size: CPU other processes used meanwhile, share of all cores.
    others_share: list[float] = field(default_factory=list)
    ours_profile: dict[str, float] = field(default_factory=dict)

    def median(self, kind: str, count: int = SIZES[-1], what: str = "seconds") -> float:
        values: list[float] = getattr(self, what)[(kind, count)]
        return statistics.median(values)

    def low(self, kind: str, count: int = SIZES[-1]) -> float:
        return min(self.seconds[(kind, count)])

    def ratios(self) -> list[float]:
        """Ours over the plain copy at the larger size, repetition by repetition (they ran side by side)."""
        key = SIZES[-1]
        return [o / c for o, c in zip(self.seconds[("ours", key)], self.seconds[("plain copy", key)], strict=True)]


def custom_id_prefix() -> str:
    """The prefix common-ai's operator gives the custom_ids of this task instance's batch."""
    from airflow.providers.common.ai.batch import state

    return str(state.key16(state.compute_identity_key(dag_id=DAG_ID, task_id=TASK_ID, run_id=RUN_ID, map_index=-1)))


def create_ended_batch(url: str, count: int) -> str:
    """One batch whose results are ready at once (the emulator runs with zero processing time)."""
    prefix = custom_id_prefix()
    body = msgspec.json.encode(
        {
            "requests": [
                {
                    "custom_id": f"{prefix}-{i}",
                    "params": {
                        "model": "claude-sonnet-5-5",
                        "max_tokens": 64,
                        "messages": [{"role": "user", "content": f"Classify item {i}"}],
                    },
                }
                for i in range(count)
            ]
        }
    )
    response = httpx2.post(url + "/v1/messages/batches", content=body, headers=HEADERS, timeout=600)
    response.raise_for_status()
    return str(response.json()["id"])


def environment(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_CONN_LLM": json.dumps({"conn_type": "pydanticai", "host": url, "password": "emulator-key"}),
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT": json.dumps(
            {"conn_type": "claude_batch", "host": url, "password": "emulator-key", "extra": {"timeout": 600}}
        ),
    }


def run_one(kind: str, url: str, batch_id: str, count: int, env: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        result: dict[str, float] = run_child(
            ["-c", _RUNNER, kind, url, batch_id, str(count), out, DAG_ID, TASK_ID, RUN_ID],
            env=env,
            timeout=900,
            what=kind,
        )
        if result["landed"] != count:
            raise RuntimeError(f"{kind} landed {result['landed']} of {count} results")
        return result


_PROFILE = r"""
import cProfile, json, pstats, sys, tempfile
from airflow.sdk import ObjectStoragePath
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.output.land import land_results
hook = ClaudeBatchHook()
hook.retrieve_batch(sys.argv[1])
with tempfile.TemporaryDirectory() as out:
    profile = cProfile.Profile()
    profile.runcall(land_results, hook, [sys.argv[1]], ObjectStoragePath("file://" + out))
stats = pstats.Stats(profile).stats
print(json.dumps([[f"{path}:{name}", own] for (path, _, name), (_, _, own, _, _) in stats.items()]))
"""
_PARTS = (  # where ours' time goes: (label, substrings of "file:function" in cProfile's own-time table)
    ("decode the lines and build their rows (msgspec, `fold_lines`)", ("results/fold.py", "msgspec.json.Decoder")),
    ("encode the rows (`encode_rows`)", ("encode_lines",)),
    ("sha256 of the published files (manifest)", ("_hashlib.HASH",)),
    ("fsync of the published files", ("fsync",)),
    ("receive the HTTP stream (httpx2, socket)", ("httpx2", "httpcore2", "_socket", "h11")),
    ("write the files", ("BufferedWriter", "BufferedReader", "posix.replace")),
)


def profile_ours(batch_id: str, env: dict[str, str]) -> dict[str, float]:
    """Shares of ours' profiled time (cProfile's own time, which inflates many small Python calls)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROFILE, batch_id], capture_output=True, text=True, env=env, timeout=900, check=True
    )
    rows: list[tuple[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    total = sum(own for _, own in rows)
    shares = dict.fromkeys([label for label, _ in _PARTS], 0.0)
    shares["everything else"] = 0.0
    for where, own in rows:
        label = next((label for label, keys in _PARTS if any(k in where for k in keys)), "everything else")
        shares[label] += own / total
    return shares


def measure(url: str, emulator_pid: int, repeat: int) -> LandFigure:
    env = environment(url)
    batches = {count: create_ended_batch(url, count) for count in SIZES}
    figure = LandFigure()
    for count, batch_id in batches.items():
        with httpx2.Client(timeout=600) as client:
            size = len(client.get(f"{url}/v1/messages/batches/{batch_id}/results", headers=HEADERS).content)
        figure.results_mb[count] = size / 1e6
    for _ in range(repeat):
        for count, batch_id in batches.items():
            others = Neighbours()
            for kind in CONTENDERS:
                emulator_cpu = process_seconds(emulator_pid)
                with others.watch((emulator_pid,)):
                    result = run_one(kind, url, batch_id, count, env)
                figure.emulator_cpu_seconds.setdefault((kind, count), []).append(
                    process_seconds(emulator_pid) - emulator_cpu
                )
                figure.seconds.setdefault((kind, count), []).append(result["seconds"])
                figure.cpu_seconds.setdefault((kind, count), []).append(result["cpu_seconds"])
                figure.peak_mb.setdefault((kind, count), []).append(result["peak_growth"] / 1e6)
            if count == SIZES[-1]:
                figure.others_share.append(others.share)
    figure.ours_profile = profile_ours(batches[SIZES[-1]], env)
    return figure


if __name__ == "__main__":
    from bench.emulator_alone import start_emulator

    process, url = start_emulator()
    try:
        measured = measure(url, process.pid, int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    finally:
        process.terminate()
        process.wait(timeout=30)
    for (kind, count), seconds in measured.seconds.items():
        print(
            f"{kind:>16} {count:>7}: {min(seconds):.2f} / {statistics.median(seconds):.2f} s, "
            f"cpu {measured.median(kind, count, 'cpu_seconds'):.2f} s, "
            f"emulator cpu {measured.median(kind, count, 'emulator_cpu_seconds'):.2f} s, "
            f"peak +{measured.median(kind, count, 'peak_mb'):.0f} MB"
        )
    for label, share in measured.ours_profile.items():
        print(f"{share:6.1%}  {label}")
