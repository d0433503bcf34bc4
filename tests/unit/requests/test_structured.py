"""The request side of `output_type`: the schema, its strict form and digest, and the params that ask for it."""

from __future__ import annotations

from typing import Literal

import pydantic
import pytest

from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.prepare import Problem, RequestDefaults
from airflow_provider_claude_batch.requests.structured import (
    OutputSpec,
    conflicts,
    output_spec,
    strict_schema,
    with_output,
)


class Inner(pydantic.BaseModel):
    code: int


class Verdict(pydantic.BaseModel):
    label: Literal["yes", "no"]
    score: float = pydantic.Field(ge=0, le=1)
    note: str | None = None
    inner: Inner


def _request(custom_id: str, **params: object) -> dict[str, object]:
    return {"custom_id": custom_id, "params": {"messages": [{"role": "user", "content": "hi"}], **params}}


def test_a_pydantic_model_gives_its_schema_fields_and_a_stable_digest() -> None:
    spec = output_spec(Verdict)
    assert spec.name == "Verdict" and spec.model is Verdict
    assert list(spec.fields) == ["label", "score", "note", "inner"]
    assert spec.digest == output_spec(Verdict).digest
    assert len(spec.digest) == 64


def test_the_digest_does_not_depend_on_key_order_but_on_the_schema() -> None:
    one = output_spec({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}})
    two = output_spec({"properties": {"b": {"type": "integer"}, "a": {"type": "string"}}, "type": "object"})
    other = output_spec({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}})
    assert one.digest == two.digest != other.digest


def test_the_strict_schema_closes_every_object_and_says_unsupported_bounds_in_words() -> None:
    strict = strict_schema(Verdict.model_json_schema())
    assert strict["additionalProperties"] is False
    assert strict["$defs"]["Inner"]["additionalProperties"] is False
    score = strict["properties"]["score"]
    assert "minimum" not in score and "maximum" not in score
    assert score["description"].endswith("{maximum: 1, minimum: 0}")
    assert strict["required"] == ["label", "score", "inner"]
    assert "default" not in strict["properties"]["note"]


@pytest.mark.parametrize(
    ("output_type", "message"),
    [
        ({"type": "objec"}, "not a valid JSON schema"),
        ({"type": "string"}, "must describe an object"),
        ({"type": "object", "properties": {"text": {"type": "string"}}}, "named like the landed table"),
        ({"type": "object", "properties": {"x": {"type": "string"}}, "default": object()}, "not JSON"),
    ],
)
def test_a_schema_that_cannot_be_used_is_refused_with_what_is_wrong(output_type: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        output_spec(output_type)


def test_something_else_than_a_model_or_a_dict_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Pydantic model class"):
        output_spec(Verdict(label="yes", score=0.5, inner=Inner(code=1)))


def test_the_native_form_is_output_config_format_and_the_tool_form_one_forced_tool() -> None:
    spec = output_spec(Verdict)
    assert spec.additions("native") == {
        "output_config": {"format": {"type": "json_schema", "schema": spec.request_schema}}
    }
    tool = spec.additions("tool")
    assert tool["tool_choice"] == {"type": "tool", "name": "Verdict"}
    assert [t["name"] for t in tool["tools"]] == ["Verdict"]
    assert tool["tools"][0]["input_schema"] == spec.request_schema
    assert OutputSpec("a b/c", {}, {}).tool_name == "a_b_c"


def test_requests_with_their_own_tools_or_format_are_problems_named_by_line() -> None:
    spec = output_spec(Verdict)
    entries = [
        (1, _request("a")),
        (2, _request("b", tools=[{"name": "t", "input_schema": {"type": "object"}}])),
        (4, _request("c", output_config={"format": {"type": "json_schema", "schema": {}}})),
        (5, _request("d", tool_choice={"type": "any"})),
    ]
    out = list(with_output(entries, spec, "claude-x", lambda model: "native"))
    problems = [entry for _, entry in out if isinstance(entry, Problem)]
    assert [(p.line, p.custom_id) for p in problems] == [(2, "b"), (4, "c"), (5, "d")]
    assert "tools" in problems[0].reason and "output_config.format" in problems[1].reason
    _, shown, bad = prepare_requests(out, RequestDefaults(model="claude-x", max_tokens=10))
    assert bad == 3 and [str(p).split(":")[0] for p in shown] == [
        "line 2 (custom_id 'b')",
        "line 4 (custom_id 'c')",
        "line 5 (custom_id 'd')",
    ]


def test_other_output_config_settings_are_kept_and_thinking_is_refused_only_with_a_forced_tool() -> None:
    spec = output_spec(Verdict)
    [(_, native)] = with_output([(1, _request("a", output_config={"effort": "low"}))], spec, "m", lambda m: "native")
    assert native["params"]["output_config"]["effort"] == "low"  # type: ignore[index]
    assert native["params"]["output_config"]["format"]["type"] == "json_schema"  # type: ignore[index]
    thinking = {"type": "enabled", "budget_tokens": 1024}
    assert conflicts({"thinking": thinking}, "native") is None
    assert "thinking" in (conflicts({"thinking": thinking}, "tool") or "")
    assert conflicts({"thinking": {"type": "disabled"}}, "tool") is None


def test_each_model_is_looked_up_once_and_the_default_model_counts() -> None:
    spec = output_spec(Verdict)
    asked: list[str] = []

    def form_for(model: str) -> Literal["native", "tool"]:
        asked.append(model)
        return "tool" if model == "old" else "native"

    entries = [(1, _request("a")), (2, _request("b", model="old")), (3, _request("c"))]
    out = dict(with_output(entries, spec, "new", form_for))
    assert asked == ["new", "old", "new"]  # (the caller memoizes: Submission asks the Models API once per model)
    assert "output_config" in out[1]["params"] and "tools" in out[2]["params"]  # type: ignore[index,operator]


def test_the_schema_is_part_of_the_fingerprint() -> None:
    def fingerprint(output_type: object) -> str:
        entries = [(1, _request("a")), (2, _request("b"))]
        asked = with_output(entries, output_spec(output_type), "m", lambda m: "native")
        return prepare_requests(asked, RequestDefaults(model="claude-x", max_tokens=10))[0].fingerprint

    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert fingerprint(schema) == fingerprint(dict(schema))
    assert fingerprint(schema) != fingerprint({"type": "object", "properties": {"a": {"type": "integer"}}})
