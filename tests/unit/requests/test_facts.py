"""What preflight reads of each request is gathered by the one validating pass, on every road alike."""

from __future__ import annotations

import json

import pytest

from airflow_provider_claude_batch.input.jsonl import iter_jsonl_blocks, iter_jsonl_lines
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.prepare import RequestDefaults
from tests.helpers import message_params

REQUESTS = [
    {"custom_id": "a", "params": message_params(model="claude-haiku-5-5", max_tokens=10)},
    {"custom_id": "b", "params": message_params(temperature=0.5, max_tokens=20)},
    {"custom_id": "c", "params": message_params(model="claude-haiku-5-5", top_k=5, top_p=0.9)},
    {"custom_id": "d", "params": {"messages": [{"role": "user", "content": "no model, no max_tokens"}]}},
]
DEFAULTS = RequestDefaults(model="claude-opus-5-5", max_tokens=99)


def _jsonl() -> bytes:
    # A blank line, so line numbers and request indexes differ.
    lines = [json.dumps(r).encode() for r in REQUESTS]
    return b"\n".join([*lines[:2], b"", *lines[2:]]) + b"\n"


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda: list(enumerate(REQUESTS, start=1)), id="python objects"),
        pytest.param(lambda: iter_jsonl_blocks([_jsonl()]), id="jsonl blocks"),
        pytest.param(lambda: iter_jsonl_lines(_jsonl().splitlines(keepends=True)), id="jsonl lines"),
    ],
)
def test_lines_models_max_tokens_and_sampling_are_kept_per_request(source: object) -> None:
    prepared, problems, bad = prepare_requests(source(), DEFAULTS)  # type: ignore[operator]
    assert bad == 0, problems
    facts = prepared.facts
    assert len(facts) == 4
    assert [facts.model_of(i) for i in range(4)] == [
        "claude-haiku-5-5",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "claude-opus-5-5",
    ]
    assert facts.models == ["claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5"]
    assert list(facts.max_tokens)[:3] == [10, 20, message_params()["max_tokens"]] and facts.max_tokens[3] == 99
    assert facts.sampling == {1: {"temperature": 0.5}, 2: {"top_k": 5, "top_p": 0.9}}
    if not isinstance(source(), list):  # type: ignore[operator]
        assert list(facts.lines) == [1, 2, 4, 5]


def test_a_block_of_complete_requests_keeps_each_ones_sampling_fields() -> None:
    # Every line as written (no blank line, nothing to fill in): the whole block passes in one decode.
    sampled = {3: {"temperature": 0.2}, 7: {"top_p": 0.5}, 8: {"top_k": 3, "temperature": 1.0}}
    lines = [
        json.dumps({"custom_id": f"r{i}", "params": message_params(**sampled.get(i, {}))}).encode() for i in range(10)
    ]
    prepared, problems, bad = prepare_requests(iter_jsonl_blocks([b"\n".join(lines) + b"\n"]))
    assert bad == 0, problems
    assert prepared.as_written == 10
    assert prepared.facts.sampling == sampled
    plain, _, _ = prepare_requests(iter_jsonl_blocks([b"\n".join(lines[:3]) + b"\n"]))
    assert plain.facts.sampling == {} and len(plain.facts.samplings) == 1


def test_a_subset_keeps_the_facts_of_its_requests() -> None:
    prepared, _, _ = prepare_requests(list(enumerate(REQUESTS, start=1)), DEFAULTS)
    chosen = prepared.subset(["c", "a"])
    assert chosen.custom_ids == ["a", "c"]
    assert list(chosen.facts.lines) == [1, 3] and chosen.facts.sampling == {1: {"top_k": 5, "top_p": 0.9}}
    assert [chosen.facts.model_of(i) for i in range(2)] == ["claude-haiku-5-5", "claude-haiku-5-5"]


def test_a_canary_is_planned_as_the_first_batch_and_the_rest_split_as_before() -> None:
    from airflow_provider_claude_batch.requests.plan import plan_batches
    from tests.helpers import make_requests

    prepared, _, _ = prepare_requests(list(enumerate(make_requests(10), start=1)))
    plans = plan_batches(prepared, max_requests=4, canary=3)
    assert [(p.index, p.first, p.stop) for p in plans] == [(0, 0, 3), (1, 3, 7), (2, 7, 10)]
    assert [(p.first, p.stop) for p in plan_batches(prepared, canary=10)] == [(0, 10)]  # all of it: no canary
