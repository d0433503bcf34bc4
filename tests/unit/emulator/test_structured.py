"""The emulator's structured replies: objects that validate against the schema asked for, in both forms."""

from __future__ import annotations

import json
from typing import Literal

import jsonschema
import msgspec
import pydantic
import pytest

from airflow_provider_claude_batch.emulator.outcomes import OutcomePlanner, OutcomeRule
from airflow_provider_claude_batch.emulator.structured import asked_schema, sample
from airflow_provider_claude_batch.emulator.wire import _content
from airflow_provider_claude_batch.requests.structured import output_spec


class Address(pydantic.BaseModel):
    city: str = pydantic.Field(min_length=3, max_length=12)
    zip: int = pydantic.Field(ge=10_000, le=99_999)


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(gt=0, lt=130)
    score: float = pydantic.Field(ge=-1, le=1)
    kind: Literal["a", "b", "c"]
    tags: list[str] = pydantic.Field(min_length=2, max_length=4)
    home: Address
    past: list[Address] = []
    nick: str | None = None
    active: bool
    email: str = pydantic.Field(json_schema_extra={"format": "email"})


SCHEMA = Person.model_json_schema()


@pytest.mark.parametrize("digest", [0, 1, 7, 12345, 2**63 - 1, 2**64 - 1])
def test_samples_validate_against_the_schema_and_the_model(digest: int) -> None:
    value = sample(SCHEMA, digest)
    jsonschema.validate(value, SCHEMA)
    Person.model_validate(value)
    assert sample(SCHEMA, digest) == value  # deterministic


@pytest.mark.parametrize("digest", [0, 3, 99])
def test_samples_of_the_strict_schema_keep_the_bounds_it_says_in_words(digest: int) -> None:
    Person.model_validate(sample(output_spec(Person).request_schema, digest))


@pytest.mark.parametrize("digest", [0, 3, 99])
def test_invalid_samples_do_not_validate(digest: int) -> None:
    with pytest.raises(pydantic.ValidationError):
        Person.model_validate(sample(SCHEMA, digest, valid=False))
    no_required = {"type": "object", "properties": {"n": {"type": "integer"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(sample(no_required, digest, valid=False), no_required)


def test_the_schema_asked_for_is_found_in_either_form() -> None:
    schema = {"type": "object", "properties": {}}
    native = {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
    tool = {
        "tools": [{"name": "other"}, {"name": "T", "input_schema": schema}],
        "tool_choice": {"type": "tool", "name": "T"},
    }
    assert asked_schema(json.dumps(native).encode()) == ("native", "", schema)
    assert asked_schema(json.dumps(tool).encode()) == ("tool", "T", schema)
    assert asked_schema(json.dumps({"tools": tool["tools"], "tool_choice": {"type": "auto"}}).encode()) is None
    assert asked_schema(b'{"model": "m"}') is None


def _params(**extra: object) -> bytes:
    return json.dumps(
        {"model": "claude-sonnet-5-5", "max_tokens": 500, "messages": [{"role": "user", "content": "hi"}], **extra}
    ).encode()


def test_the_planner_replies_with_json_text_natively_and_a_tool_call_for_a_forced_tool() -> None:
    spec = output_spec(Person)
    planner = OutcomePlanner([OutcomeRule(match="bad", invalid_output=True)])
    native = planner.plan("ok", _params(**spec.additions("native")), "2023-06-01")
    Person.model_validate_json(native.text)
    assert native.stop_reason == "end_turn" and not native.tool_name
    assert _content(native)[0]["type"] == "text"
    tool = planner.plan("ok", _params(**spec.additions("tool")), "2023-06-01")
    block = json.loads(msgspec.json.encode(_content(tool)))[0]
    assert (block["type"], block["name"], tool.stop_reason) == ("tool_use", "Person", "tool_use")
    Person.model_validate(block["input"])
    assert tool.output_tokens == max(1, len(tool.text) // 4)  # usage as for any reply
    bad = planner.plan("bad", _params(**spec.additions("native")), "2023-06-01")
    with pytest.raises(pydantic.ValidationError):
        Person.model_validate_json(bad.text)


def test_a_native_request_for_a_model_without_structured_outputs_errors_as_the_api_would() -> None:
    from airflow_provider_claude_batch.emulator.store import BatchStore

    spec = output_spec(Person)
    store = BatchStore()

    def item(custom_id: str, model: str, form: str) -> dict[str, object]:
        params = json.loads(_params(**spec.additions(form)))  # type: ignore[arg-type]
        return {"custom_id": custom_id, "params": {**params, "model": model}}

    body = {
        "requests": [
            item("old-native", "claude-sonnet-4-5", "native"),  # deprecated, without the capability
            item("old-tool", "claude-sonnet-4-5", "tool"),
            item("new-native", "claude-sonnet-5-5", "native"),
        ]
    }
    batch = store.create(msgspec.json.encode(body), "2023-06-01")
    outcomes = {r.custom_id: (r.outcome, r.error_type) for r in batch.records}
    assert outcomes == {
        "old-native": ("errored", "invalid_request_error"),
        "old-tool": ("succeeded", ""),
        "new-native": ("succeeded", ""),
    }
