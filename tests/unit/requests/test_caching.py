"""Automatic prompt caching: where the breakpoint goes, what is left alone, and the fingerprint."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from airflow_provider_claude_batch.requests.caching import (
    CACHE_CONTROL,
    add_cache_breakpoints,
    estimate_tokens,
    minimum_cacheable_tokens,
)
from airflow_provider_claude_batch.requests.prepare import prepare
from airflow_provider_claude_batch.requests.schema import MAX_CACHE_BREAKPOINTS, cache_breakpoints

INSTRUCTION = "Label the review as positive, negative or neutral. " * 100  # ~5,100 bytes, ~1,275 tokens
SONNET = "claude-sonnet-4-6"  # minimum 1,024 tokens


def _request(i: int, **params: Any) -> dict[str, Any]:
    body = {"model": SONNET, "max_tokens": 5, "messages": [{"role": "user", "content": f"review {i}"}]}
    return {"custom_id": f"r{i}", "params": {**body, **params}}


def _cached(requests: list[dict[str, Any]], **kw: Any) -> tuple[list[dict[str, Any]], Any, Any, Any]:
    prepared, problems, bad = prepare(list(enumerate(requests, start=1)))
    assert not bad, problems
    result, plan = add_cache_breakpoints(prepared, **kw)
    sent = msgspec.json.decode(result.body(0, len(result)))["requests"]
    return sent, plan, prepared, result


def test_a_shared_string_system_becomes_a_block_with_a_1h_breakpoint() -> None:
    sent, plan, before, after = _cached([_request(i, system=INSTRUCTION) for i in range(3)])
    for request in sent:
        assert request["params"]["system"] == [{"type": "text", "text": INSTRUCTION, "cache_control": CACHE_CONTROL}]
        assert request["params"]["messages"][0]["content"].startswith("review")  # the unique part: untouched
    (prefix,) = plan.prefixes
    assert (prefix.requests, prefix.block, prefix.model) == (3, "system", SONNET)
    assert prefix.estimated_tokens == estimate_tokens(len(json.dumps(INSTRUCTION)))
    assert plan.changed == 3 and "3 requests" in plan.describe() and "system" in plan.describe()
    assert after.fingerprint != before.fingerprint  # the change is new work, and the same change the same work
    assert add_cache_breakpoints(before)[0].fingerprint == after.fingerprint
    assert after.facts is before.facts and after.facts.models == [SONNET]  # what preflight reads, kept


def test_the_breakpoint_closes_the_longest_shared_prefix_in_tools_system_then_messages() -> None:
    tools = [{"name": f"t{n}", "description": "d" * 3000, "input_schema": {"type": "object"}} for n in range(2)]
    system = [{"type": "text", "text": "s" * 100}, {"type": "text", "text": "z" * 100}]
    shared_turns = [
        {"role": "user", "content": [{"type": "text", "text": "context " * 50}, {"type": "text", "text": "more"}]},
        {"role": "assistant", "content": "understood"},
    ]
    requests = [
        _request(i, tools=tools, system=system, messages=[*shared_turns, {"role": "user", "content": f"q{i}"}])
        for i in range(2)
    ]
    sent, plan, _, _ = _cached(requests)
    for request in sent:
        params = request["params"]
        assert params["messages"][1]["content"] == [
            {"type": "text", "text": "understood", "cache_control": CACHE_CONTROL}
        ]
        assert params["messages"][2]["content"].startswith("q")
        assert len(cache_breakpoints(params)) == 1
    assert plan.prefixes[0].block == "messages[1].content"

    only_tools = [_request(i, tools=tools, system=f"unique {i}") for i in range(2)]
    sent, plan, _, _ = _cached(only_tools)
    assert [p.block for p in plan.prefixes] == ["tools[1]"]
    assert all(r["params"]["tools"][1]["cache_control"] == CACHE_CONTROL for r in sent)
    assert all("cache_control" not in r["params"]["tools"][0] for r in sent)


def test_a_prefix_under_the_models_minimum_or_shared_by_one_request_is_left_alone() -> None:
    assert minimum_cacheable_tokens("claude-haiku-4-5") == 4096
    assert minimum_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert minimum_cacheable_tokens("claude-opus-5-5") == 512
    assert minimum_cacheable_tokens("claude-unknown-9") == 1024
    haiku = [_request(i, model="claude-haiku-4-5", system=INSTRUCTION) for i in range(3)]  # ~1,275 < 4,096
    _, plan, before, after = _cached(haiku)
    assert after is before and not plan.prefixes and plan.changed == 0
    alone = [_request(0, system=INSTRUCTION), _request(1, system=INSTRUCTION + "!")]
    assert not _cached(alone)[1].prefixes
    other_models = [_request(0, system=INSTRUCTION), _request(1, system=INSTRUCTION, model="claude-opus-4-8")]
    assert not _cached(other_models)[1].prefixes  # one request of each model shares nothing


def test_requests_with_their_own_cache_control_are_sent_as_written() -> None:
    own = _request(0, system=[{"type": "text", "text": INSTRUCTION, "cache_control": {"type": "ephemeral"}}])
    automatic = _request(1, system=INSTRUCTION, cache_control={"type": "ephemeral"})
    requests = [own, automatic, _request(2, system=INSTRUCTION), _request(3, system=INSTRUCTION)]
    sent, plan, _, _ = _cached(requests)
    assert sent[0] == own and sent[1] == automatic
    assert plan.left_as_written == 2 and plan.changed == 2
    for request in sent:  # never more than four, never a 1h after a 5m
        found = cache_breakpoints(request["params"])
        assert len(found) <= MAX_CACHE_BREAKPOINTS
        ttls = [control.get("ttl", "5m") for _, control in found]  # type: ignore[union-attr]
        assert ttls == sorted(ttls, key=lambda ttl: ttl != "1h")


def test_a_thinking_block_never_takes_the_breakpoint_the_block_before_does() -> None:
    turns = [
        {"role": "user", "content": INSTRUCTION},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}]},
    ]
    requests = [_request(i, messages=[*turns, {"role": "user", "content": f"q{i}"}]) for i in range(2)]
    sent, plan, _, _ = _cached(requests)
    assert plan.prefixes[0].block == "messages[0].content"
    assert all("cache_control" not in r["params"]["messages"][1]["content"][0] for r in sent)


def test_warmup_params_write_the_prefix_with_one_output_token() -> None:
    requests = [_request(i, system=INSTRUCTION, tools=[{"name": "t", "input_schema": {}}]) for i in range(2)]
    _, plan, _, _ = _cached(requests, warmup=True)
    call = plan.prefixes[0].warmup_params
    assert call["max_tokens"] == 1 and call["model"] == SONNET
    assert call["system"][0]["cache_control"] == CACHE_CONTROL and call["tools"] == requests[0]["params"]["tools"]
    assert call["messages"] == [{"role": "user", "content": "."}]
    assert _cached(requests)[1].prefixes[0].warmup_params is None


@pytest.mark.parametrize("count", [1, 2])
def test_nothing_shared_leaves_the_prepared_requests_untouched(count: int) -> None:
    requests = [_request(i, system=f"{i} " + INSTRUCTION) for i in range(count)]
    _, plan, before, after = _cached(requests)
    assert after is before and plan.prefixes == ()


def _block(ttl: str | None = "1h") -> dict[str, Any]:
    control = {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}
    return {"type": "text", "text": "x", "cache_control": control}


@pytest.mark.parametrize(
    ("system", "fragment"),
    [
        ([_block()] * 5, "5 cache_control breakpoints (params.system[0], params.system[1]"),
        ([_block("2h")], "params.system[0].cache_control.ttl must be '5m' or '1h', not '2h'"),
        (
            [_block("5m"), _block("1h")],
            "params.system[1].cache_control has a 1h ttl after the 5m breakpoint at params.system[0]",
        ),
        ([_block(None), _block("1h")], "1-hour breakpoints must come before 5-minute ones"),
        ([{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}], 'must be {"type": "ephemeral"}'),
    ],
)
def test_a_malformed_cache_control_is_refused_naming_its_line_either_road(system: list[Any], fragment: str) -> None:
    good = _request(0, system=[_block("1h"), _block("5m")])
    bad = _request(1, system=system)
    for entries in ([(1, good), (2, bad)], _JsonlLines([good, bad])):
        _, problems, count = prepare(entries)  # type: ignore[arg-type]
        assert count == 1 and problems[0].line == 2 and fragment in problems[0].reason, problems


def test_four_breakpoints_counting_the_automatic_one_pass_five_do_not() -> None:
    four = _request(0, system=[_block()] * 3, cache_control={"type": "ephemeral"})
    five = _request(1, system=[_block()] * 4, cache_control={"type": "ephemeral"})
    _, problems, bad = prepare([(1, four), (2, five)])
    assert bad == 1 and problems[0].line == 2 and "params.system[0]" in problems[0].reason


class _JsonlLines:
    """The JSONL road (a block of lines kept as written when every line passes)."""

    def __init__(self, requests: list[dict[str, Any]]) -> None:
        self.data = b"\n".join(json.dumps(r).encode() for r in requests)

    def blocks(self) -> Any:
        return iter([self.data])

    def lines(self) -> Any:
        return self.data.split(b"\n")


def test_a_block_whose_bytes_appear_earlier_in_the_request_is_still_the_one_marked() -> None:
    """The splice looks for the block's bytes; an identical value under another key first is not marked."""
    early = {"note": INSTRUCTION}  # the same string, before "system" in the request
    requests = [
        {"custom_id": f"r{i}", "params": {"metadata": early, **_request(i, system=INSTRUCTION)["params"]}}
        for i in range(2)
    ]
    sent, plan, _, _ = _cached(requests)
    assert plan.prefixes[0].block == "system"
    for request in sent:
        assert request["params"]["metadata"] == early
        assert request["params"]["system"][0]["cache_control"] == CACHE_CONTROL


def test_requests_that_differ_in_output_config_share_no_cache_entry_so_get_no_breakpoint_for_it() -> None:
    # The cache key holds output_config: a breakpoint there would make each pay a write none reads.
    low, high = {"effort": "low"}, {"effort": "high"}
    _, plan, before, after = _cached(
        [_request(0, system=INSTRUCTION, output_config=low), _request(1, system=INSTRUCTION, output_config=high)]
    )
    assert after is before and not plan.prefixes
    _, plan, _, _ = _cached([_request(i, system=INSTRUCTION, output_config=low) for i in range(2)])
    assert [p.requests for p in plan.prefixes] == [2]  # the same output_config: shared as before
