"""Structured output (`output_type`) end to end: `dag.test()` against the emulator, over the official SDK.

The emulator's catalogue reports native structured outputs for claude-sonnet-5-5 and none for
claude-sonnet-4-5 (deprecated), so one DAG exercises each form; a request marked `invalid_output` gets an object
that does not fit the schema.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from tests.dag_runner import rerun_cleared, run_dag, write_dag
from tests.helpers import AIRFLOW_VERSION

MODEL = """
from typing import Literal
from pydantic import BaseModel, Field
from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator, ClaudeBatchResultsOperator

class Label(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1)
    tags: list[str] = []
"""


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _one_task(tmp_path: Path, out: Path, model: str, n: int = 6, extra: str = "", requests: str = "") -> str:
    requests = requests or (
        f'[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": f"review {{i}}"}}]}}}}'
        f" for i in range({n})]"
    )
    return (
        MODEL
        + f"""
batch = ClaudeBatchOperator(
    task_id="batch", model={model!r}, max_tokens=64, state_path={str(tmp_path / "state")!r},
    requests={requests}, output_type=Label, output_path={str(out)!r}, deferrable=True, poll_interval=0.2,
    create_policy=FAST, max_retry_rounds=0{extra})
"""
    )


def _rows(path: Path) -> dict[str, dict[str, object]]:
    return {r["custom_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _raw_content(out: Path) -> list[list[dict[str, object]]]:
    raw = next((out / "rounds" / "round-0" / "raw").iterdir())
    lines = [json.loads(line) for line in raw.read_text().splitlines()]
    return [line["result"]["message"]["content"] for line in lines]


@pytest.mark.parametrize(
    ("model", "block"),
    [("claude-sonnet-5-5", "text"), ("claude-sonnet-4-5", "tool_use")],
    ids=["native", "forced-tool"],
)
def test_outputs_land_as_typed_columns_and_invalid_ones_as_failures(
    dags: Path, control: EmulatorControl, tmp_path: Path, model: str, block: str
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r[12]", "invalid_output": True})
    out = tmp_path / "out"
    result = run_dag(write_dag(dags, f"structured_{block}", _one_task(tmp_path, out, model, extra=', formats=["csv"]')))
    assert result.task_state("batch") == "success"  # invalid outputs never fail the task by themselves
    assert {blocks[0]["type"] for blocks in _raw_content(out)} == {block}  # asked in the form the model takes
    rows = _rows(out / "results.jsonl")
    for custom_id in ("r0", "r3", "r4", "r5"):
        row = rows[custom_id]
        assert row["error_type"] is None
        assert row["label"] in ("positive", "negative", "neutral")
        assert 0 <= row["confidence"] <= 1  # type: ignore[operator]
        assert isinstance(json.loads(row["tags"]), list)  # type: ignore[arg-type]
    for custom_id in ("r1", "r2"):
        assert rows[custom_id]["result_type"] == "succeeded"
        assert rows[custom_id]["error_type"] == "invalid_output"
        assert "label" in rows[custom_id]["error_message"]  # type: ignore[operator]
        assert rows[custom_id]["label"] is None
    assert set(_rows(out / "failures.jsonl")) == {"r1", "r2"}
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[-5:] == ["label", "confidence", "tags", "round", "attempts"]
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["failed"] == 2
    assert manifest["error_types"] == {"invalid_output": 2}
    structured = manifest["structured_output"]
    assert (structured["name"], structured["validated"], structured["invalid_output"]) == ("Label", 4, 2)
    assert structured["columns"] == {"label": "string", "confidence": "number", "tags": "json"}
    assert len(structured["schema_sha256"]) == 64
    assert manifest["usage_total"]["output_tokens"] > 0  # invalid outputs were paid for, and are counted
    summary = result.xcom("batch")
    assert (summary["validated"], summary["invalid_output"], summary["failed"]) == (4, 2, 2)


def test_invalid_outputs_count_toward_max_failed_fraction(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r[123]", "invalid_output": True})
    out = tmp_path / "out"
    dag = write_dag(
        dags, "structured_fraction", _one_task(tmp_path, out, "claude-sonnet-5-5", extra=", max_failed_fraction=0.25")
    )
    assert run_dag(dag).task_state("batch") == "failed"
    assert json.loads((out / "_manifest.json").read_text())["failed_fraction"] == 0.5  # landed, then failed


def test_retry_invalid_output_resubmits_each_invalid_request_once(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes(
        {"match": "r1", "invalid_output": True, "times": 1},  # valid the second time
        {"match": "r2", "invalid_output": True},  # never valid: retried once, then left as failed
    )
    out = tmp_path / "out"
    extra = ", retry_invalid_output=True, max_retry_rounds=3"
    result = run_dag(
        write_dag(
            dags,
            "structured_retry",
            _one_task(tmp_path, out, "claude-sonnet-5-5", n=4, extra=extra).replace("max_retry_rounds=0, ", ""),
        )
    )
    assert result.task_state("batch") == "success"
    assert [sorted(b["custom_ids"]) for b in control.state()["batches"]] == [["r0", "r1", "r2", "r3"], ["r1", "r2"]]
    rows = _rows(out / "results.jsonl")
    assert (rows["r1"]["error_type"], rows["r1"]["attempts"]) == (None, 2)
    assert (rows["r2"]["error_type"], rows["r2"]["attempts"]) == ("invalid_output", 2)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert (manifest["structured_output"]["validated"], manifest["structured_output"]["invalid_output"]) == (3, 1)


def test_requests_with_their_own_tools_or_format_are_refused_before_any_batch(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    requests = (
        '[{"custom_id": "a", "params": {"messages": [{"role": "user", "content": "hi"}]}},'
        ' {"custom_id": "b", "params": {"messages": [{"role": "user", "content": "hi"}],'
        ' "tools": [{"name": "t", "input_schema": {"type": "object"}}]}},'
        ' {"custom_id": "c", "params": {"messages": [{"role": "user", "content": "hi"}],'
        ' "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}}]'
    )
    dag = write_dag(
        dags, "structured_conflict", _one_task(tmp_path, tmp_path / "out", "claude-sonnet-5-5", requests=requests)
    )
    result = run_dag(dag)
    assert result.task_state("batch") == "failed"
    assert control.state()["batches_created"] == 0
    assert not (tmp_path / "out" / "_manifest.json").exists()


def test_a_retry_with_the_same_schema_re_attaches_and_a_changed_schema_is_new_work(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    # The record is under state_path, so on Airflow < 3.3 (no clear that keeps the run in dag.test)
    # re-running the same date is the same clear-and-re-run.
    rerun = rerun_cleared if AIRFLOW_VERSION >= (3, 3) else run_dag
    control.configure(processing_seconds=0.2)
    date = datetime(2026, 11, 3, tzinfo=UTC)
    out = tmp_path / "out"
    body = _one_task(tmp_path, out, "claude-sonnet-5-5", n=3)
    dag = write_dag(dags, "structured_reattach", body)
    assert run_dag(dag, date).task_state("batch") == "success"
    assert rerun(dag, date).task_state("batch") == "success"
    assert control.state()["batches_created"] == 1  # same schema: the recorded batch is re-attached
    changed = write_dag(
        dags, "structured_reattach", body.replace("tags: list[str] = []", "tags: list[str] = []\n    why: str")
    )
    assert rerun(changed, date).task_state("batch") == "success"
    assert control.state()["batches_created"] == 2  # a changed schema is new work
    assert "why" in _rows(out / "results.jsonl")["r0"]


def test_the_results_operator_validates_and_read_validated_streams_instances(
    dags: Path, control: EmulatorControl, emulator: EmulatorServer, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r1", "invalid_output": True})
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "structured_three_tasks",
        MODEL
        + f"""
from airflow.sdk import task
from airflow_provider_claude_batch.output.read import read_validated
submit = ClaudeBatchSubmitOperator(
    task_id="submit", model="claude-haiku-4-5", max_tokens=64, output_type=Label, state_path={str(tmp_path / "s")!r},
    requests=[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": "x"}}]}}}} for i in range(3)],
    create_policy=FAST, wait_for_completion=True, deferrable=False, poll_interval=0.2)
land = ClaudeBatchResultsOperator(task_id="land", batch_ids=submit.output, output_path={str(out)!r},
                                  output_type=Label, formats=["jsonl", "parquet"])

@task
def downstream(summary):
    return [item.model_dump() for item in read_validated(summary, Label)]

submit >> land
downstream(land.output)
""",
    )
    result = run_dag(dag)
    assert result.task_state("downstream") == "success"
    summary = result.xcom("land")
    assert (summary["validated"], summary["invalid_output"]) == (2, 1)
    items = result.xcom("downstream")
    assert len(items) == 2 and all(item["label"] in ("positive", "negative", "neutral") for item in items)
    import pyarrow.parquet as pq

    schema = pq.read_schema(out / "results.parquet")
    assert str(schema.field("confidence").type) == "double"
    assert str(schema.field("label").type) == "string"
    [batch_id] = summary["batch_ids"]
    served = httpx2.get(
        f"{emulator.url}/v1/messages/batches/{batch_id}/results",
        headers={"x-api-key": emulator.api_key, "anthropic-version": "2023-06-01"},
    )
    assert (out / "raw" / f"{batch_id}.jsonl").read_bytes() == served.content  # the raw JSONL, byte for byte


def test_the_decorator_takes_an_output_type(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=0.2)
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        "structured_decorated",
        MODEL
        + f"""
from airflow.sdk import task

@task.claude_batch(output_path={str(out)!r}, model="claude-haiku-5-5", max_tokens=64, output_type=Label,
                   state_path={str(tmp_path / "state")!r}, create_policy=FAST, poll_interval=0.2)
def reviews():
    return [{{"custom_id": f"q{{i}}", "params": {{"messages": [{{"role": "user", "content": f"R{{i}}"}}]}}}}
            for i in range(3)]

reviews()
""",
    )
    result = run_dag(dag)
    assert result.task_state("reviews") == "success"
    assert result.xcom("reviews")["validated"] == 3
    assert all(row["label"] for row in _rows(out / "results.jsonl").values())


def test_the_results_operator_resubmits_an_invalid_output_with_the_submit_tasks_output_type(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r1", "invalid_output": True, "times": 1})
    out = tmp_path / "out"
    requests = '[{"custom_id": f"r{i}", "params": {"messages": [{"role": "user", "content": "x"}]}} for i in range(3)]'
    dag = write_dag(
        dags,
        "structured_resubmit",
        MODEL
        + f"""
REQUESTS = {requests}
submit = ClaudeBatchSubmitOperator(
    task_id="submit", model="claude-sonnet-5-5", max_tokens=64, output_type=Label, requests=REQUESTS,
    state_path={str(tmp_path / "s")!r}, create_policy=FAST, wait_for_completion=True, deferrable=False,
    poll_interval=0.2)
land = ClaudeBatchResultsOperator(
    task_id="land", batch_ids=submit.output, output_path={str(out)!r}, output_type=Label, max_retry_rounds=1,
    retry_invalid_output=True, deferrable=False, poll_interval=0.2,
    resubmit=Submission(requests=REQUESTS, model="claude-sonnet-5-5", max_tokens=64,
                        state_path={str(tmp_path / "s")!r}, create_policy=FAST))
submit >> land
""",
    )
    result = run_dag(dag)
    assert result.task_state("land") == "success"
    assert [sorted(b["custom_ids"]) for b in control.state()["batches"]] == [["r0", "r1", "r2"], ["r1"]]
    rows = _rows(out / "results.jsonl")
    assert (rows["r1"]["error_type"], rows["r1"]["round"], rows["r1"]["label"] is not None) == (None, 1, True)
    assert result.xcom("land")["validated"] == 3


def test_a_model_the_models_api_does_not_know_is_refused_by_preflight_or_asked_through_a_forced_tool(
    dags: Path,
    control: EmulatorControl,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """An unknown model: preflight (on by default) refuses it before any batch; without preflight the
    output_type is asked for through a forced tool (the Models API said 404), and the batch says the rest."""
    import logging

    caplog.set_level(logging.INFO)
    control.configure(processing_seconds=0.2)
    out = tmp_path / "out"
    refused = run_dag(write_dag(dags, "structured_unknown_model", _one_task(tmp_path, out, "claude-private-1", n=2)))
    assert refused.task_state("batch") == "failed"
    assert control.state()["batches_created"] == 0
    body = _one_task(tmp_path / "off", out, "claude-private-1", n=2, extra=", preflight=False, max_failed_fraction=1.0")
    result = run_dag(write_dag(dags, "structured_unknown_model_unchecked", body))
    assert result.task_state("batch") == "success"
    from tests.helpers import printed

    logged = caplog.text + printed(capfd)  # where the task's log lines go differs between Airflow versions
    assert "asking for the output_type through a forced tool" in logged
    assert control.state()["batches_created"] == 1
    assert {r["error_type"] for r in _rows(out / "results.jsonl").values()} == {"not_found_error"}


def test_an_unreachable_models_api_fails_the_task_before_any_batch(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.inject({"endpoint": "models", "status": 503, "count": 50})  # past the SDK's retries
    dag = write_dag(dags, "structured_no_models_api", _one_task(tmp_path, tmp_path / "out", "claude-sonnet-5-5"))
    assert run_dag(dag).task_state("batch") == "failed"
    assert control.state()["batches_created"] == 0  # the form is never guessed: nothing was spent
