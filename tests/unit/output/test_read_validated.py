"""`read_validated`: a landed table back as validated instances, only for the schema it was landed with."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest

from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.output.manifest import structured_entry
from airflow_provider_claude_batch.output.read import read_validated
from airflow_provider_claude_batch.requests.structured import output_spec
from airflow_provider_claude_batch.results.structured import OutputCheck


class Point(pydantic.BaseModel):
    x: int
    tags: list[str]


def _land(folder: Path, output_type: object, rows: list[dict[str, object]]) -> None:
    spec = output_spec(output_type)
    entry = structured_entry(spec, OutputCheck(spec).kinds, 1, 1)
    folder.mkdir()
    (folder / "_manifest.json").write_text(json.dumps({"structured_output": entry}))
    (folder / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


ROWS = [
    {"custom_id": "a", "result_type": "succeeded", "error_type": None, "x": 1, "tags": '["p", "q"]'},
    {"custom_id": "b", "result_type": "succeeded", "error_type": "invalid_output", "x": None, "tags": None},
    {"custom_id": "c", "result_type": "errored", "error_type": "api_error", "x": None, "tags": None},
]


def test_the_rows_that_validated_come_back_as_instances(tmp_path: Path) -> None:
    _land(tmp_path / "out", Point, ROWS)
    assert list(read_validated(str(tmp_path / "out"), Point)) == [Point(x=1, tags=["p", "q"])]
    summary = {"output_path": str(tmp_path / "out")}  # the results operator's XCom summary works too
    assert [p.x for p in read_validated(summary, Point)] == [1]


def test_a_json_schema_gives_dicts(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}, "tags": {"type": "array"}}}
    _land(tmp_path / "out", schema, ROWS)
    assert list(read_validated(str(tmp_path / "out"), schema)) == [{"x": 1, "tags": ["p", "q"]}]


def test_a_table_landed_for_another_schema_is_refused(tmp_path: Path) -> None:
    _land(tmp_path / "out", Point, ROWS)

    class Other(pydantic.BaseModel):
        x: int

    with pytest.raises(BatchInputError, match="landed for Point"):
        list(read_validated(str(tmp_path / "out"), Other))
    with pytest.raises(BatchInputError, match=r"No _manifest\.json"):
        list(read_validated(str(tmp_path / "missing"), Point))
