"""The emulator's per-request checks and test-chosen outcomes, without a server."""

from __future__ import annotations

import json

import pytest

from airflow_provider_claude_batch.emulator.cache import PromptCache
from airflow_provider_claude_batch.emulator.outcomes import CacheVisit, OutcomePlanner, OutcomeRule, params_problem
from tests.helpers import message_params


def _raw(params: dict[str, object]) -> bytes:
    return json.dumps(params).encode()


@pytest.mark.parametrize(
    ("params", "error_type", "fragment"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "invalid_request_error", "model"),
        (message_params(model="gpt-4"), "not_found_error", "gpt-4"),
        (message_params(max_tokens=0), "invalid_request_error", "max_tokens"),
        (message_params(max_tokens="5"), "invalid_request_error", "max_tokens"),
        (message_params(messages=[]), "invalid_request_error", "messages"),
        (message_params(messages="hi"), "invalid_request_error", "messages"),
        (message_params(stream=True), "invalid_request_error", "stream"),
        (message_params(speed="fast"), "invalid_request_error", "speed"),
        (message_params(temperature=0.5), "invalid_request_error", "temperature"),
    ],
)
def test_a_bad_request_is_reported_per_request(params: dict[str, object], error_type: str, fragment: str) -> None:
    problem = params_problem(_raw(params), "2026-10-21")
    assert problem is not None
    assert problem[0] == error_type
    assert fragment in problem[1]


def test_sampling_parameters_are_still_allowed_on_the_older_api_version() -> None:
    assert params_problem(_raw(message_params(temperature=0.5)), "2023-06-01") is None


def test_full_messages_params_pass() -> None:
    params = message_params(
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        tools=[{"name": "t", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AA"}}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and?"},
        ],
    )
    assert params_problem(_raw(params), "2026-10-21") is None


def test_outcomes_are_deterministic() -> None:
    first = OutcomePlanner().plan("a", _raw(message_params()), "2026-10-21")
    second = OutcomePlanner().plan("a", _raw(message_params()), "2026-10-21")
    assert first == second
    assert first.outcome == "succeeded"
    assert first.input_tokens > 0 and 0 < first.output_tokens <= 64


def test_a_rule_with_times_fails_a_request_twice_then_lets_it_succeed() -> None:
    planner = OutcomePlanner(
        [
            OutcomeRule.from_dict(
                {"match": "flaky-.*", "outcome": "errored", "error_type": "overloaded_error", "times": 2}
            )
        ]
    )
    outcomes = [planner.plan("flaky-1", _raw(message_params()), "2026-10-21") for _ in range(3)]
    assert [o.outcome for o in outcomes] == ["errored", "errored", "succeeded"]
    assert outcomes[0].error_type == "overloaded_error"
    assert planner.plan("steady", _raw(message_params()), "2026-10-21").outcome == "succeeded"


def test_rules_choose_text_and_expiry() -> None:
    planner = OutcomePlanner(
        [
            OutcomeRule.from_dict({"match": "late-.*", "outcome": "expired"}),
            OutcomeRule.from_dict({"match": ".*", "choices": ["positive", "negative"]}),
        ]
    )
    assert planner.plan("late-1", _raw(message_params()), "2026-10-21").outcome == "expired"
    texts = {planner.plan(f"r{i}", _raw(message_params()), "2026-10-21").text for i in range(20)}
    assert texts == {"positive", "negative"}


def test_cache_control_requests_write_then_read_the_shared_prefix() -> None:
    """The first request with a long enough 1h breakpoint writes it; the next ones read it (all hits here)."""
    params = message_params(
        system=[{"type": "text", "text": "x" * 8000, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    )
    visit = CacheVisit(PromptCache(), now=0.0)
    records = [OutcomePlanner().plan(f"c{i}", _raw(params), "2026-10-21", cache=visit) for i in range(4)]
    assert records[0].cache_write_1h > 0 and records[0].cache_read == 0
    assert all(r.cache_read == records[0].cache_write_1h and r.cache_write_1h == 0 for r in records[1:])
    assert all(r.cache_write_5m == 0 for r in records)
    without = OutcomePlanner().plan("c0", _raw(params), "2026-10-21")
    assert without.input_tokens == records[0].input_tokens + records[0].cache_write_1h  # same total input


@pytest.mark.parametrize(
    "bad",
    [
        {"match": "("},
        {"match": ".*", "outcome": "exploded"},
        {"match": ".*", "outcome": "errored", "error_type": "nope"},
        {"match": ".*", "times": 0},
        {"match": ".*", "colour": "red"},
    ],
)
def test_a_malformed_rule_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(Exception, match=r".+"):
        OutcomeRule.from_dict(bad)
