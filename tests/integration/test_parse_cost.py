"""DAG files are parsed constantly: importing our public modules must not pull in the SDK."""

from __future__ import annotations

import json
import pkgutil
import statistics
import subprocess
import sys

import airflow_provider_claude_batch as package

_PROBE = """
import importlib, json, sys, time
modules = json.loads(sys.argv[1])
started = time.perf_counter()
import airflow.sdk
sdk_done = time.perf_counter()
before = set(sys.modules)
for name in modules:
    importlib.import_module(name)
done = time.perf_counter()
print(json.dumps({
    "sdk_seconds": sdk_done - started,
    "added_seconds": done - sdk_done,
    "added_modules": sorted(set(sys.modules) - before),
    "anthropic_loaded": [m for m in sys.modules if m == "anthropic" or m.startswith("anthropic.")],
}))
"""


def _public_modules(*, include_emulator: bool) -> list[str]:
    names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    return [n for n in names if include_emulator or ".emulator" not in n]


def _probe(modules: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules)], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


DAG_FACING = [
    "airflow_provider_claude_batch.operators.claude_batch",
    "airflow_provider_claude_batch.sensors.claude_batch",
]


def _measure(modules: list[str], label: str, record_metric, repeats: int) -> None:  # type: ignore[no-untyped-def]
    runs = [_probe(modules) for _ in range(repeats)]
    for run in runs:
        assert run["anthropic_loaded"] == []
    added = statistics.median(float(r["added_seconds"]) for r in runs)  # type: ignore[arg-type]
    sdk = statistics.median(float(r["sdk_seconds"]) for r in runs)  # type: ignore[arg-type]
    record_metric(
        f"parse cost: {label} over `import airflow.sdk`",
        f"{added * 1000:.1f} ms median of {repeats} (airflow.sdk itself: {sdk * 1000:.0f} ms); "
        f"{len(runs[0]['added_modules'])} modules added",
    )  # type: ignore[arg-type]


def test_what_a_dag_file_imports_does_not_import_the_sdk_and_is_measured(record_metric) -> None:  # type: ignore[no-untyped-def]
    _measure(DAG_FACING, "operators + sensors (what a DAG file imports)", record_metric, repeats=5)


def test_no_public_module_imports_the_sdk(record_metric) -> None:  # type: ignore[no-untyped-def]
    modules = _public_modules(include_emulator=False)
    assert "airflow_provider_claude_batch.hooks.claude_batch" in modules
    assert set(DAG_FACING) <= set(modules)
    _measure(modules, "every public module", record_metric, repeats=1)


def test_the_emulator_does_not_import_the_sdk_either() -> None:
    run = _probe(_public_modules(include_emulator=True))
    assert run["anthropic_loaded"] == []
