"""The example DAGs users copy: they parse cleanly, and the nightly and eval examples run end to end."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag
from tests.helpers import AIRFLOW_VERSION

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"


@pytest.fixture
def examples(airflow_db: Path, claude_conn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The examples copied into the dags folder (dag.test() runs only DAGs found there)."""
    for item in EXAMPLES.iterdir():
        if item.is_dir():
            shutil.copytree(item, airflow_db / item.name, dirs_exist_ok=True)
        elif item.suffix == ".py":
            shutil.copy(item, airflow_db / item.name)
    monkeypatch.setenv("CLAUDE_BATCH_EXAMPLES_OUTPUT", f"file://{tmp_path}/output")
    monkeypatch.setenv("CLAUDE_BATCH_EXAMPLES_POLL_SECONDS", "0.2")
    monkeypatch.setenv("AIRFLOW__CLAUDE_BATCH__STATE_PATH", f"file://{tmp_path}/state")
    monkeypatch.syspath_prepend(str(airflow_db))
    sys.modules.pop("_common", None)
    return airflow_db


def _load(folder: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_parses_without_import_errors(examples: Path) -> None:
    if AIRFLOW_VERSION >= (3, 1):
        from airflow.dag_processing.dagbag import DagBag
    else:  # moved there in 3.1
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(examples))
    assert bag.import_errors == {}
    assert {
        "claude_batch_nightly_classification",
        "claude_batch_eval_run",
        "claude_batch_backfill_partitions",
        "claude_batch_smoke",
        "claude_batch_nightly_by_deadline",
        "claude_batch_partitioned_input",
    } <= set(bag.dag_ids)
    for dag_id in ("claude_batch_nightly_classification", "claude_batch_eval_run", "claude_batch_backfill_partitions"):
        assert bag.get_dag(dag_id).doc_md, dag_id  # each says when to use it


def _estimate_vs_actual(manifest: dict[str, Any]) -> str:
    estimate = manifest["estimate"]
    return (
        f"estimated {estimate['input_tokens']} input tokens ({estimate['method']}), ${estimate['batch_usd_low']:.6f}"
        f" to ${estimate['batch_usd_high']:.6f} at batch price; actual {estimate['actual_input_tokens']} input "
        f"tokens, ${estimate['actual_batch_usd']:.6f}"
    )


def test_the_nightly_example_lands_a_partition(
    examples: Path, control: EmulatorControl, tmp_path: Path, record_metric: Any
) -> None:
    control.configure(processing_seconds=0.3)
    run = run_dag(_load(examples, "nightly_classification").dag)
    assert run.state == "success"
    day = run.run.logical_date.date().isoformat()
    folder = tmp_path / "output" / "nightly_classification" / day
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["requests"] == 60 and manifest["counts"]["succeeded"] == 60
    assert manifest["structured_output"]["validated"] == 60  # every reply a ReviewLabel
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert {row["label"] for row in rows} <= {"positive", "negative", "neutral"}
    assert all(0 <= row["confidence"] <= 1 for row in rows)
    # The submit task's preflight estimate, carried by its record to the results task's manifest.
    assert manifest["estimate"]["actual_within_range"] is True
    record_metric("nightly example, estimate vs actual", _estimate_vs_actual(manifest))


def test_the_eval_example_scores_the_landed_answers(
    examples: Path, control: EmulatorControl, tmp_path: Path, record_metric: Any
) -> None:
    control.configure(processing_seconds=0.3)
    control.set_outcomes({"match": "review-0001", "invalid_output": True})  # one answer that is no ReviewLabel
    run = run_dag(_load(examples, "eval_run").dag)
    assert run.state == "success"
    report = run.xcom("score")
    assert report["cases"] == 30 and report["answered"] == report["validated"] == 29
    assert 0 <= report["mean_confidence"] <= 1
    assert 0 < report["correct"] < 30  # deterministic emulated labels: some right, some wrong
    day = run.run.logical_date.date().isoformat()
    manifest = json.loads((tmp_path / "output" / "eval_run" / day / "_manifest.json").read_text())
    assert manifest["estimate"]["actual_within_range"] is True
    record_metric("eval example, estimate vs actual", _estimate_vs_actual(manifest))


def test_the_deadline_example_lands_every_row_with_its_route(
    examples: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control.configure(processing_seconds=0.3)
    # The batch ends long before this deadline: everything at the batch price, no premium.
    monkeypatch.setenv("CLAUDE_BATCH_EXAMPLES_DEADLINE", "{{ dag_run.start_date + macros.timedelta(hours=2) }}")
    run = run_dag(_load(examples, "nightly_by_deadline").dag)
    assert run.state == "success"
    day = run.run.logical_date.date().isoformat()
    folder = tmp_path / "output" / "nightly_by_deadline" / day
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["requests"] == 60 and manifest["routes"]["batch"]["requests"] == 60
    assert manifest["cost"]["deadline_premium_usd"] == 0
    assert {json.loads(line)["route"] for line in (folder / "results.jsonl").read_text().splitlines()} == {"batch"}


def test_the_partitioned_example_lands_each_partition_and_rolls_them_up(
    examples: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    import hashlib

    control.configure(processing_seconds=0.2)
    run = run_dag(_load(examples, "partitioned_input").dag)
    assert run.state == "success"
    day = run.run.logical_date.date().isoformat()
    root = tmp_path / "output" / "partitioned_input" / day
    rolled = json.loads((root / "_rollup_manifest.json").read_text())
    assert len(rolled["partitions"]) == 3  # 60 reviews in partitions of 20: three mapped tasks, a batch each
    assert rolled["requests"] == rolled["counts"]["succeeded"] == 60 and rolled["failed"] == 0
    for number, partition in enumerate(rolled["partitions"]):
        manifest = (root / f"part-{number}" / "_manifest.json").read_bytes()
        assert partition["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
        assert partition["requests"] == json.loads(manifest)["requests"] == 20
    assert rolled["cost"]["batch_usd"] == sum(
        json.loads((root / f"part-{n}" / "_manifest.json").read_text())["cost"]["batch_usd"] for n in range(3)
    )
    assert len(control.state(custom_ids=False)["batches"]) == 3
