"""Validating outputs in the fold: typed columns, invalid_output failures, counts, rounds' retries."""

from __future__ import annotations

import json
from typing import Literal

import pydantic
import pytest

from airflow_provider_claude_batch.requests.structured import output_spec
from airflow_provider_claude_batch.results.fold import encode_rows, fold_lines
from airflow_provider_claude_batch.results.rounds import retry_ids
from airflow_provider_claude_batch.results.structured import MESSAGE_CHARS, OutputCheck, column_kind
from airflow_provider_claude_batch.results.totals import Totals


class Label(pydantic.BaseModel):
    label: Literal["positive", "negative", "neutral"]
    confidence: float = pydantic.Field(ge=0, le=1)
    count: int | None = None
    tags: list[str] = []
    flag: bool = False


def _line(custom_id: str, content: list[dict[str, object]], stop_reason: str = "end_turn") -> str:
    message = {
        "id": "msg_1",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop_reason,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}})


def _text(custom_id: str, value: object, stop_reason: str = "end_turn") -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return _line(custom_id, [{"type": "text", "text": text}], stop_reason)


def _tool(custom_id: str, value: object) -> str:
    return _line(custom_id, [{"type": "tool_use", "id": "t", "name": "Label", "input": value}], "tool_use")


def _fold(lines: list[str], output_type: object = Label) -> tuple[list[dict[str, object]], list[str], Totals]:
    totals = Totals()
    folded = fold_lines("\n".join(lines).encode(), "msgbatch_x", totals, OutputCheck(output_spec(output_type)))
    rows = [json.loads(line) for line in encode_rows(folded.rows).splitlines()]
    return rows, [row.custom_id for row in folded.failed], totals


def test_valid_outputs_in_either_form_get_typed_columns_after_the_tables_own() -> None:
    good = {"label": "positive", "confidence": 0.75, "tags": ["a", "b"], "count": 3}
    rows, failed, totals = _fold([_text("a", good), _tool("b", good)])
    assert failed == [] and totals.validated == 2 and totals.failed == 0
    for row in rows:
        assert list(row)[-5:] == ["label", "confidence", "count", "tags", "flag"]
        assert (row["label"], row["confidence"], row["count"], row["flag"]) == ("positive", 0.75, 3, False)
        assert json.loads(row["tags"]) == ["a", "b"]  # nested values as JSON text
    assert rows[1]["text"] == ""  # the forced tool's reply has no text; its input is the output


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (_text("x", {"label": "meh", "confidence": 0.5}), "label: Input should be"),
        (_text("x", {"confidence": 0.5}), "label: Field required"),
        (_tool("x", {"label": "positive", "confidence": 7}), "confidence: Input should be less than or equal to 1"),
        (_text("x", "Sure! Here is the JSON"), "Invalid JSON"),
        (_text("x", '{"label": "posi', "max_tokens"), "stop_reason 'max_tokens'"),
        (_line("x", []), "held no output"),
    ],
)
def test_an_output_that_does_not_validate_is_an_invalid_output_failure_that_keeps_its_usage(
    line: str, said: str
) -> None:
    rows, failed, totals = _fold([line])
    assert failed == ["x"]
    row = rows[0]
    assert (row["result_type"], row["error_type"]) == ("succeeded", "invalid_output")
    assert said in row["error_message"]
    assert row["label"] is None and row["output_tokens"] == 5
    assert totals.counts["succeeded"] == 1 and totals.error_types == {"invalid_output": 1}
    assert totals.failed == 1 and totals.usage_by_model["claude-x"].output_tokens == 5


def test_the_validation_message_is_bounded() -> None:
    class Many(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(title="Many")
        a: int
        b: int
        c: int
        d: int
        e: int

    rows, _, _ = _fold([_text("x", {name: "x" * 2000 for name in "abcde"})], Many)
    message = rows[0]["error_message"]
    assert len(message) <= MESSAGE_CHARS
    assert "(and 2 more)" in message or message.endswith("…")


def test_errored_rows_get_the_columns_empty_and_stay_failures() -> None:
    errored = json.dumps(
        {"custom_id": "e", "result": {"type": "errored", "error": {"error": {"type": "api_error", "message": "x"}}}}
    )
    rows, failed, totals = _fold([errored, _text("a", {"label": "neutral", "confidence": 0})])
    assert failed == ["e"] and rows[0]["label"] is None and rows[1]["label"] == "neutral"
    assert totals.validated == 1 and totals.failed == 1


def test_a_json_schema_dict_is_validated_by_jsonschema() -> None:
    schema = {
        "type": "object",
        "title": "Count",
        "properties": {"n": {"type": "integer", "minimum": 0}, "meta": {"type": "object"}},
        "required": ["n"],
    }
    rows, failed, _ = _fold(
        [_text("a", '{"n": 2.0, "meta": {"k": 1}}'), _text("b", {"n": -1}), _text("c", "[1]")], schema
    )
    assert failed == ["b", "c"]
    assert (rows[0]["n"], json.loads(rows[0]["meta"])) == (2, {"k": 1})  # 2.0 is an integer to JSON schema
    assert "minimum" in rows[1]["error_message"] and "is not of type 'object'" in rows[2]["error_message"]


@pytest.mark.parametrize(
    ("prop", "kind"),
    [
        ({"type": "integer"}, "integer"),
        ({"anyOf": [{"type": "number"}, {"type": "null"}]}, "number"),
        ({"type": ["boolean", "null"]}, "boolean"),
        ({"enum": ["a", "b"]}, "string"),
        ({"enum": [1, 2]}, "integer"),
        ({"type": "array", "items": {"type": "string"}}, "json"),
        ({"$ref": "#/$defs/Inner"}, "json"),
        ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, "json"),
    ],
)
def test_column_kinds_follow_the_schema(prop: dict[str, object], kind: str) -> None:
    root = {"$defs": {"Inner": {"type": "object", "properties": {}}}}
    assert column_kind(prop, root) == kind


def test_invalid_output_is_retried_once_only_when_asked() -> None:
    rows = [
        {"custom_id": "a", "result_type": "succeeded", "error_type": "invalid_output"},
        {"custom_id": "b", "result_type": "errored", "error_type": "overloaded_error"},
    ]
    assert retry_ids(rows) == ["b"]
    retried: set[str] = set()
    assert retry_ids(rows, retried) == ["a", "b"]
    assert retry_ids(rows, retried) == ["b"]  # once: a second invalid output stays failed
