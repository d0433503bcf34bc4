"""Figure 1, DAG-parse cost: what importing each package's DAG-facing modules adds over `import airflow.sdk`.

Each probe is a fresh interpreter (imports are cached per process); the three packages are probed
in turn, round after round, so that machine noise falls on all of them alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass

PACKAGES = {
    "ours (airflow-provider-claude-batch)": [
        "airflow_provider_claude_batch.operators.claude_batch",
        "airflow_provider_claude_batch.sensors.claude_batch",
    ],
    "anthropic provider 1.2.0": [
        "airflow.providers.anthropic.operators.batch",
        "airflow.providers.anthropic.sensors.batch",
    ],
    "common-ai 1.0.0 (batch)": ["airflow.providers.common.ai.operators.llm_batch"],
}

_PROBE = """
import importlib, json, sys, time
import airflow.sdk
before = set(sys.modules)
started = time.perf_counter()
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
elapsed = time.perf_counter() - started
print(json.dumps({"seconds": elapsed, "modules": len(set(sys.modules) - before),
                  "anthropic": "anthropic" in sys.modules}))
"""


@dataclass
class ParseCost:
    label: str
    seconds: list[float]
    modules: int
    imports_sdk: bool

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def min_ms(self) -> float:
        return min(self.seconds) * 1000


def measure(repeat: int) -> list[ParseCost]:
    results = {label: ParseCost(label, [], 0, False) for label in PACKAGES}
    for _ in range(repeat):
        for label, modules in PACKAGES.items():
            out = subprocess.run(
                [sys.executable, "-c", _PROBE, json.dumps(modules)],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            probe = json.loads(out.stdout.strip().splitlines()[-1])
            results[label].seconds.append(probe["seconds"])
            results[label].modules = probe["modules"]
            results[label].imports_sdk = probe["anthropic"]
    return list(results.values())
