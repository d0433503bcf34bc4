"""Results by a deadline, through `dag.test()` against the emulator: the guard cancels at the switch time and
sends what the batch did not finish to the Messages API; routes; the sync budget; never paying twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag

HEADER = (
    "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator\n"
    "from airflow_provider_claude_batch.sync.routing import SyncPolicy\n"
    "QUICK = SyncPolicy(request_latency=timedelta(seconds=0.5), landing_time=timedelta(seconds=2))\n"
    # The guard's switch time 20 s after the task starts: 40 s - 2 s landing - ceil(10 / 4) x 6 s.
    "GUARD = SyncPolicy(request_latency=timedelta(seconds=6), landing_time=timedelta(seconds=2))\n"
)


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _dag(tmp_path: Path, out: Path, n: int, extra: str) -> str:
    return (
        HEADER
        + f"""
batch = ClaudeBatchOperator(
    task_id="batch", model="claude-sonnet-5-5", max_tokens=32, state_path={str(tmp_path / "state")!r},
    requests=[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": f"item {{i}}"}}]}}}}
              for i in range({n})],
    output_path={str(out)!r}, deferrable=True, poll_interval=0.2, create_policy=FAST{extra})
"""
    )


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "_manifest.json").read_text())


@pytest.mark.slow
def test_the_guard_cancels_at_the_switch_time_and_sends_the_stragglers_to_the_messages_api(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes({"match": "r[01]", "straggle": True})  # hold the batch in progress until canceled
    out = tmp_path / "out"
    extra = ", deadline=timedelta(seconds=40), sync_concurrency=4, sync_policy=GUARD"
    result = run_dag(write_dag(dags, "deadline_guard", _dag(tmp_path, out, 10, extra)))
    assert result.task_state("batch") == "success"
    state = control.state()
    assert state["batches_created"] == 1
    assert state["batches"][0]["canceled"] and state["batches"][0]["cancel_calls"] == 1
    assert state["messages_answered"] == {"r0": 1, "r1": 1}  # only the stragglers, once each
    rows = _rows(out / "results.jsonl")
    assert sorted(rows) == sorted(f"r{i}" for i in range(10))  # one row per custom_id
    assert {k: (r["result_type"], r["route"]) for k, r in rows.items() if k in ("r0", "r1", "r2")} == {
        "r0": ("succeeded", "sync"),
        "r1": ("succeeded", "sync"),
        "r2": ("succeeded", "batch"),
    }
    assert {r["route"] for k, r in rows.items() if k not in ("r0", "r1")} == {"batch"}
    guard = json.loads((out / "rounds" / "round-0" / "_deadline_guard.json").read_text())
    assert guard["batch_ids"] == [state["batches"][0]["id"]] and guard["reason"].startswith("deadline guard")
    manifest = _manifest(out)
    routes, cost = manifest["routes"], manifest["cost"]
    assert (routes["batch"]["requests"], routes["sync"]["requests"]) == (8, 2)
    assert routes["sync"]["counts"]["succeeded"] == 2
    assert [r["route"] for r in manifest["rounds"]] == ["batch", "sync"]
    sync_round = manifest["rounds"][1]
    assert routes["sync"]["usd"] == pytest.approx(sync_round["cost"]["standard_usd"])
    assert cost["paid_usd"] == pytest.approx(routes["batch"]["usd"] + routes["sync"]["usd"])
    # The premium: the stragglers' tokens at the standard price instead of the batch price.
    assert cost["deadline_premium_usd"] == pytest.approx(sync_round["cost"]["standard_usd"] / 2, abs=2e-6)
    assert cost["deadline_premium_usd"] > 0
    assert cost["batch_only_usd"] == pytest.approx(cost["batch_usd"])
    summary = result.xcom("batch")
    assert summary["routes"] == routes and summary["requests"] == 10
