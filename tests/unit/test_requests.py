"""Validation, serialization, fingerprint and splitting of requests: pure, no network."""

from __future__ import annotations

import json

import pytest

from airflow_provider_claude_batch.batch.requests import (
    Problem,
    RequestDefaults,
    iter_jsonl,
    plan_batches,
    prepare_requests,
    rows_to_requests,
    template_params_builder,
)
from tests.helpers import make_requests, message_params


def _numbered(items: list[object]) -> list[tuple[int, object]]:
    return list(enumerate(items, start=1))


def test_defaults_fill_only_what_a_request_leaves_out() -> None:
    requests = [{"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}},
                {"custom_id": "b", "params": message_params(model="claude-opus-5-5", max_tokens=7)}]
    prepared, problems, bad = prepare_requests(_numbered(requests),
                                               RequestDefaults(model="claude-haiku-5-5", max_tokens=99, system="s"))
    assert bad == 0 and not problems
    body = json.loads(prepared.body(0, 2))
    assert body["requests"][0]["params"] == {"messages": [{"role": "user", "content": "x"}],
                                             "model": "claude-haiku-5-5", "max_tokens": 99, "system": "s"}
    assert body["requests"][1]["params"]["model"] == "claude-opus-5-5"
    assert body["requests"][1]["params"]["max_tokens"] == 7


def test_full_messages_params_pass_through_untouched() -> None:
    params = message_params(
        system=[{"type": "text", "text": "ctx", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}], tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                            "data": "AAAA"}},
                                               {"type": "document", "source": {"type": "text", "data": "doc"}}]},
                  {"role": "assistant", "content": "ok"}, {"role": "user", "content": "next"}],
        thinking={"type": "enabled", "budget_tokens": 1024}, metadata={"user_id": "u"})
    prepared, _, bad = prepare_requests(_numbered([{"custom_id": "x", "params": params}]))
    assert bad == 0
    assert json.loads(prepared.body(0, 1))["requests"][0]["params"] == params


@pytest.mark.parametrize(("request_", "reason"), [
    ({"custom_id": "a b", "params": message_params()}, "custom_id must be 1-64"),
    ({"custom_id": "x" * 65, "params": message_params()}, "custom_id must be 1-64"),
    ({"custom_id": 5, "params": message_params()}, "custom_id is missing or not a string"),
    ({"params": message_params()}, "custom_id is missing"),
    ({"custom_id": "a"}, "params is missing"),
    ({"custom_id": "a", "params": [1]}, "params is missing or not an object"),
    ({"custom_id": "a", "params": message_params(), "extra": 1}, "unexpected key(s) ['extra']"),
    ({"custom_id": "a", "params": {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}, "model"),
    ({"custom_id": "a", "params": message_params(max_tokens=True)}, "max_tokens"),
    ({"custom_id": "a", "params": message_params(max_tokens=0)}, "at least 1"),
    ({"custom_id": "a", "params": message_params(messages=[])}, "messages is empty"),
    ({"custom_id": "a", "params": message_params(messages=[{"role": "system", "content": "x"}])}, "role"),
    ({"custom_id": "a", "params": message_params(messages=[{"role": "user", "content": ""}])}, "content"),
    ({"custom_id": "a", "params": message_params(stream=True)}, "streaming"),
    ({"custom_id": "a", "params": message_params(speed="fast")}, "fast mode"),
    ({"custom_id": "a", "params": message_params(metadata={"when": object()})}, "not JSON-serializable"),
    ("text", "expected an object"),
])
def test_each_kind_of_bad_request_is_named(request_: object, reason: str) -> None:
    _prepared, problems, bad = prepare_requests(_numbered([request_]))
    assert bad == 1
    assert reason in problems[0].reason
    assert problems[0].line == 1


def test_problems_are_counted_in_full_but_only_the_first_few_are_kept() -> None:
    requests: list[object] = [{"custom_id": f"bad {i}", "params": message_params()} for i in range(25)]
    _, problems, bad = prepare_requests(_numbered(requests))
    assert bad == 25 and len(problems) == 10
    assert str(problems[0]) == "line 1 (custom_id 'bad 0'): custom_id must be 1-64 characters of letters, digits, " \
                               "'_' or '-'"


def test_duplicates_across_the_whole_input_name_both_lines() -> None:
    requests = [*make_requests(3), {"custom_id": "req-1", "params": message_params()}]
    _, problems, _ = prepare_requests(_numbered(requests))
    assert str(problems[0]) == "line 4 (custom_id 'req-1'): duplicate custom_id (first seen on line 2)"


def test_the_fingerprint_follows_the_content_and_order() -> None:
    def fingerprint(requests: list[dict[str, object]]) -> str:
        return prepare_requests(_numbered(list(requests)))[0].fingerprint

    base = make_requests(3)
    assert fingerprint(base) == fingerprint(make_requests(3))
    assert fingerprint(base) != fingerprint(base[::-1])
    assert fingerprint(base) != fingerprint(make_requests(4))


def test_splitting_by_count_and_by_size_keeps_every_request_once_in_order() -> None:
    prepared, _, _ = prepare_requests(_numbered(make_requests(10)))
    by_count = plan_batches(prepared, max_requests=4)
    assert [(p.first, p.stop) for p in by_count] == [(0, 4), (4, 8), (8, 10)]
    size_limit = prepared.body_size(0, 3)
    by_size = plan_batches(prepared, max_body_bytes=size_limit)
    assert all(p.body_bytes <= size_limit for p in by_size)
    assert [p.request_count for p in by_size] == [3, 3, 3, 1]
    ids = []
    for plan in by_size:
        body = prepared.body(plan.first, plan.stop)
        assert len(body) == plan.body_bytes
        ids += [r["custom_id"] for r in json.loads(body)["requests"]]
    assert ids == [f"req-{i}" for i in range(10)]


def test_a_streamed_body_equals_the_joined_body_chunk_by_chunk() -> None:
    prepared, _, _ = prepare_requests(_numbered(make_requests(50)))
    chunks = list(prepared.iter_body(10, 40, chunk_bytes=100))
    assert max(len(c) for c in chunks) <= 100
    assert b"".join(chunks) == prepared.body(10, 40)
    assert json.loads(b"".join(chunks))["requests"][0]["custom_id"] == "req-10"


def test_a_request_too_large_for_any_batch_is_a_problem() -> None:
    big = {"custom_id": "big", "params": message_params("x" * 5000)}
    _, problems, bad = prepare_requests(_numbered([big]), max_body_bytes=1000)
    assert bad == 1 and "over the" in problems[0].reason


def test_jsonl_lines_are_numbered_and_bad_json_is_a_problem() -> None:
    entries = list(iter_jsonl([b'{"a": 1}\n', b"\n", b"{oops\n", b'"x"\n']))
    assert entries[0] == (1, {"a": 1})
    assert entries[1][0] == 3 and isinstance(entries[1][1], Problem)
    assert entries[2] == (4, "x")


def test_rows_become_requests_through_a_template() -> None:
    build = template_params_builder({"model": "claude-haiku-5-5", "max_tokens": 5,
                                     "messages": [{"role": "user", "content": "Rate {text} in {{json}}"}]})
    rows = [(2, {"id": "r1", "text": "great"}), (3, {"id": "", "text": "x"}), (4, {"id": "r3"})]
    out = list(rows_to_requests(rows, custom_id_column="id", build_params=build))
    assert out[0] == (2, {"custom_id": "r1", "params": {"model": "claude-haiku-5-5", "max_tokens": 5,
                                                        "messages": [{"role": "user", "content": "Rate great in {json}"}]}})
    assert isinstance(out[1][1], Problem) and "'id' is missing" in out[1][1].reason
    assert isinstance(out[2][1], Problem) and "KeyError('text')" in out[2][1].reason
