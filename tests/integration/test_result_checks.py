"""A wrong results stream never lands as success, and nothing from the server becomes a path: real
Airflow (`dag.test()`), the SDK over HTTP to the emulator serving the faulty streams, local files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.exceptions import BatchInFlightError, BatchInputError, ResultsMismatchError
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.output.land import LandingSettings, land_results
from airflow_provider_claude_batch.results.checks import ExpectedResults
from airflow_provider_claude_batch.storage import as_path
from tests.dag_runner import run_dag, write_dag

HEADER = (
    "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator, ClaudeBatchResultsOperator\n"
)
REQUESTS = (
    '[{"custom_id": f"r{i}", "params": {"messages": [{"role": "user", "content": f"item {i}"}]}} for i in range(6)]'
)
# Landing reads a stream up to three times in the task; a fault served on every read fails it.
EVERY_READ = 3
DATE = datetime(2026, 3, 1, tzinfo=UTC)  # the same logical date again is a clear and re-run of the same task instances


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _three_tasks(tmp_path: Path, out: Path, batch_ids: str = "submit.output", extra: str = "") -> str:
    return (
        HEADER
        + f"""
submit = ClaudeBatchSubmitOperator(task_id="submit", requests={REQUESTS}, model="claude-sonnet-5-5", max_tokens=16,
                                   state_path={str(tmp_path / "state")!r}, max_requests_per_batch=4)
wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
land = ClaudeBatchResultsOperator(task_id="land", batch_ids={batch_ids}, output_path={str(out)!r}{extra})
submit >> wait >> land
"""
    )


def _one_task(tmp_path: Path, out: Path, extra: str = "") -> str:
    return (
        HEADER
        + f"""
batch = ClaudeBatchOperator(task_id="batch", requests={REQUESTS}, model="claude-sonnet-5-5", max_tokens=16,
                            state_path={str(tmp_path / "state")!r}, output_path={str(out)!r}, deferrable=True,
                            poll_interval=0.2, create_policy=FAST{extra})
"""
    )


def _published(out: Path) -> list[str]:
    """What a reader sees under the output: every file outside hidden staging folders."""
    if not out.exists():
        return []
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)
    )


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fault", ["duplicate_line", "unknown_result"])
def test_the_results_operator_refuses_a_wrong_stream_and_a_rerun_lands_it(
    dags: Path, control: EmulatorControl, tmp_path: Path, fault: str
) -> None:
    control.configure(processing_seconds=0.2)
    out = tmp_path / "out"
    dag = write_dag(dags, f"wrong_stream_{fault}", _three_tasks(tmp_path, out, extra=", formats=['jsonl', 'csv']"))
    control.inject({"endpoint": "results", "kind": fault, "count": EVERY_READ})
    failed = run_dag(dag, DATE)
    assert failed.task_state("land") == "failed"
    assert _published(out) == []  # no final file, no raw copy, no manifest
    assert control.state()["faults_served"]["results"] == EVERY_READ

    rerun = run_dag(dag, DATE)  # the fault is used up: the stream is right again
    assert rerun.task_state("land") == "success"
    assert len(control.state()["batches"]) == 2  # the re-run re-attached, it did not submit again
    assert sorted(r["custom_id"] for r in _rows(out / "results.jsonl")) == [f"r{i}" for i in range(6)]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [b["results_checked_against"] for b in manifest["batches"]] == ["submission record"] * 2


def test_bare_batch_ids_are_still_checked_for_duplicates_and_counts(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0)
    hook = ClaudeBatchHook()
    batch_id = hook.create_batch(
        [
            {
                "custom_id": f"b{i}",
                "params": {
                    "model": "claude-sonnet-5-5",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "x"}],
                },
            }
            for i in range(5)
        ]
    ).id
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "bare_ids",
        HEADER
        + f"""
land = ClaudeBatchResultsOperator(task_id="land", batch_ids={batch_id!r}, output_path={str(out)!r})
""",
    )
    control.inject({"endpoint": "results", "kind": "duplicate_line", "count": EVERY_READ})
    failed = run_dag(dag, DATE)
    assert failed.task_state("land") == "failed" and _published(out) == []
    assert run_dag(dag, DATE).task_state("land") == "success"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["batches"][0]["results_checked_against"] == "request counts"
    assert sorted(r["custom_id"] for r in _rows(out / "results.jsonl")) == [f"b{i}" for i in range(5)]


@pytest.mark.parametrize("fault", ["duplicate_line", "unknown_result"])
def test_the_one_task_flow_keeps_exactly_one_row_per_input_custom_id(
    dags: Path, control: EmulatorControl, tmp_path: Path, fault: str
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r3", "outcome": "errored", "error_type": "overloaded_error", "times": 1})
    out = tmp_path / "out"
    dag = write_dag(dags, f"one_task_{fault}", _one_task(tmp_path, out, extra=", max_requests_per_batch=4"))
    control.inject({"endpoint": "results", "kind": fault, "count": EVERY_READ})
    failed = run_dag(dag, DATE)
    assert failed.task_state("batch") == "failed"
    assert _published(out) == []

    rerun = run_dag(dag, DATE)
    assert rerun.task_state("batch") == "success"
    rows = _rows(out / "results.jsonl")
    assert sorted(r["custom_id"] for r in rows) == [f"r{i}" for i in range(6)]  # one row per input custom_id
    assert {r["custom_id"]: (r["round"], r["attempts"]) for r in rows}["r3"] == (1, 2)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert {b["results_checked_against"] for b in manifest["batches"]} == {"input"}
    assert len(control.state()["batches"]) == 3  # two parts in round 0, r3 again in round 1: nothing paid twice


def _ended_batch(control: EmulatorControl, ids: list[str]) -> str:
    control.configure(processing_seconds=0)
    return (
        ClaudeBatchHook()
        .create_batch(
            [
                {
                    "custom_id": c,
                    "params": {
                        "model": "claude-sonnet-5-5",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": c}],
                    },
                }
                for c in ids
            ]
        )
        .id
    )


def test_a_direct_landing_names_the_batch_counts_and_custom_ids(
    control: EmulatorControl, claude_conn: str, tmp_path: Path
) -> None:
    ids = [f"q{i}" for i in range(5)]
    batch_id = _ended_batch(control, ids)
    control.inject({"endpoint": "results", "kind": "unknown_result", "count": EVERY_READ})
    with pytest.raises(ResultsMismatchError) as raised:
        land_results(
            ClaudeBatchHook(), [batch_id], as_path(str(tmp_path)), expected={batch_id: ExpectedResults(5, None, ids)}
        )
    message = str(raised.value)
    assert batch_id in message and "5 requests, 5 results for 5 distinct custom_ids" in message
    assert "'never-submitted'" in message and "1 missing" in message
    assert _published(tmp_path) == []


def test_a_batch_id_that_is_not_the_apis_shape_fails_before_any_call(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "bad_batch_id",
        HEADER
        + f"""
land = ClaudeBatchResultsOperator(task_id="land", batch_ids=["msgbatch_../../../tmp/x"], output_path={str(out)!r})
""",
    )
    assert run_dag(dag).task_state("land") == "failed"
    assert control.state()["calls"] == {}
    assert _published(out) == []
    with pytest.raises(BatchInputError, match="Not a Message Batch ID"):
        land_results(ClaudeBatchHook(), ["msgbatch_a/../b"], as_path(str(out)))


def test_a_retrieved_batch_with_another_id_is_an_error(
    control: EmulatorControl, claude_conn: str, tmp_path: Path
) -> None:
    batch_id = _ended_batch(control, ["a"])

    class _OtherIdHook(ClaudeBatchHook):
        """The API's answer, with the ID a misbehaving server (or proxy) would put in it."""

        def retrieve_batch(self, requested: str) -> Any:
            return super().retrieve_batch(requested).model_copy(update={"id": "msgbatch_../elsewhere"})

    with pytest.raises(BatchInFlightError, match=r"answered with batch 'msgbatch_\.\./elsewhere'"):
        land_results(_OtherIdHook(), [batch_id], as_path(str(tmp_path)))
    assert _published(tmp_path) == []


@pytest.mark.parametrize("link", ["raw", "results.jsonl", "_manifest.json"])
def test_a_symlink_inside_the_output_is_not_followed_out_of_it(
    control: EmulatorControl, claude_conn: str, tmp_path: Path, link: str
) -> None:
    batch_id = _ended_batch(control, ["a", "b"])
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / link).symlink_to(elsewhere if link == "raw" else elsewhere / link)
    with pytest.raises(BatchInputError, match="leads out of the output folder"):
        land_results(ClaudeBatchHook(), [batch_id], as_path(str(out)))
    assert list(elsewhere.iterdir()) == []
    assert not (out / "_manifest.json").exists() or link == "_manifest.json"


def test_a_round_folder_linked_out_of_the_output_is_refused(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "rounds").symlink_to(elsewhere)
    assert run_dag(write_dag(dags, "linked_rounds", _one_task(tmp_path, out))).task_state("batch") == "failed"
    assert [p for p in elsewhere.rglob("*") if p.is_file()] == []


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_jsonl_parquet_keep_the_text(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    formula = '=HYPERLINK("http://evil.example","open")'
    control.set_outcomes(
        {"match": "r0", "text": formula},
        {"match": "r1", "text": "-1+2"},
        {"match": "r2", "text": "@SUM(A1)"},
        {"match": "r3", "text": "\tTAB"},
    )
    out = tmp_path / "out"
    dag = write_dag(dags, "csv_safety", _three_tasks(tmp_path, out, extra=", formats=['jsonl', 'csv', 'parquet']"))
    assert run_dag(dag).task_state("land") == "success"
    import csv

    import pyarrow.parquet as pq

    with open(out / "results.csv", newline="") as handle:
        cells = {r["custom_id"]: r["text"] for r in csv.DictReader(handle)}
    assert (cells["r0"], cells["r1"], cells["r2"], cells["r3"]) == ("'" + formula, "'-1+2", "'@SUM(A1)", "'\tTAB")
    assert cells["r4"].startswith("Emulated reply")
    as_served = {"r0": formula, "r1": "-1+2", "r2": "@SUM(A1)", "r3": "\tTAB"}
    jsonl = {r["custom_id"]: r["text"] for r in _rows(out / "results.jsonl")}
    parquet = dict(
        zip(*pq.read_table(out / "results.parquet", columns=["custom_id", "text"]).to_pydict().values(), strict=True)
    )
    for text in (jsonl, parquet):
        assert {k: text[k] for k in as_served} == as_served


def test_the_one_task_flow_csv_is_neutralised_too(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r0", "text": "=1+1"})
    out = tmp_path / "out"
    assert (
        run_dag(
            write_dag(dags, "one_task_csv", _one_task(tmp_path, out, extra=", formats=['jsonl', 'csv']"))
        ).task_state("batch")
        == "success"
    )
    import csv

    with open(out / "results.csv", newline="") as handle:
        assert {r["custom_id"]: r["text"] for r in csv.DictReader(handle)}["r0"] == "'=1+1"
    assert {r["custom_id"]: r["text"] for r in _rows(out / "results.jsonl")}["r0"] == "=1+1"


def test_landing_settings_default_reads_three_times(tmp_path: Path) -> None:
    assert LandingSettings().stream_attempts == EVERY_READ


def test_a_model_without_a_price_leaves_the_cost_incomplete_not_silently_zero(
    control: EmulatorControl, claude_conn: str, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0)
    control.add_models({"id": "claude-unpriced-9-9"})  # a model the API serves and the price table lacks
    batch_id = (
        ClaudeBatchHook()
        .create_batch(
            [
                {
                    "custom_id": "a",
                    "params": {
                        "model": "claude-unpriced-9-9",
                        "max_tokens": 8,
                        "messages": [{"role": "user", "content": "a"}],
                    },
                }
            ]
        )
        .id
    )
    manifest = land_results(ClaudeBatchHook(), [batch_id], as_path(str(tmp_path)))
    assert manifest["cost"]["batch_usd"] == 0 and manifest["cost"]["unpriced_models"] == ["claude-unpriced-9-9"]
    assert manifest["usage_total"]["input_tokens"] > 0
    assert manifest["cost_complete"] is False
