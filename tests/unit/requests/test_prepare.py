"""Validation, serialization, fingerprint and splitting of requests: pure, no network."""

from __future__ import annotations

import datetime
import decimal
import functools
import hashlib
import io
import json
import math
import random

import pytest

from airflow_provider_claude_batch.input import read as read_module
from airflow_provider_claude_batch.input.jsonl import iter_jsonl_blocks
from airflow_provider_claude_batch.input.read import iter_jsonl
from airflow_provider_claude_batch.input.rows import rows_to_requests, template_params_builder
from airflow_provider_claude_batch.requests import hashing as hashing_module
from airflow_provider_claude_batch.requests import prepare as prepare_module
from airflow_provider_claude_batch.requests import prepared as prepared_module
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.plan import BatchPlan, plan_batches
from airflow_provider_claude_batch.requests.prepare import (
    FINGERPRINT_PREFIX,
    PreparedRequests,
    Problem,
    RequestDefaults,
)
from tests.helpers import make_requests, message_params


def _numbered(items: list[object]) -> list[tuple[int, object]]:
    return list(enumerate(items, start=1))


def test_defaults_fill_only_what_a_request_leaves_out() -> None:
    requests = [
        {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}},
        {"custom_id": "b", "params": message_params(model="claude-opus-5-5", max_tokens=7)},
    ]
    prepared, problems, bad = prepare_requests(
        _numbered(requests), RequestDefaults(model="claude-haiku-5-5", max_tokens=99, system="s")
    )
    assert bad == 0 and not problems
    body = json.loads(prepared.body(0, 2))
    assert body["requests"][0]["params"] == {
        "messages": [{"role": "user", "content": "x"}],
        "model": "claude-haiku-5-5",
        "max_tokens": 99,
        "system": "s",
    }
    assert body["requests"][1]["params"]["model"] == "claude-opus-5-5"
    assert body["requests"][1]["params"]["max_tokens"] == 7


def test_full_messages_params_pass_through_untouched() -> None:
    params = message_params(
        system=[{"type": "text", "text": "ctx", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto"},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "document", "source": {"type": "text", "data": "doc"}},
                ],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "next"},
        ],
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": "u"},
    )
    prepared, _, bad = prepare_requests(_numbered([{"custom_id": "x", "params": params}]))
    assert bad == 0
    assert json.loads(prepared.body(0, 1))["requests"][0]["params"] == params


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
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
        # values msgspec would send as something else (null, a list, base64, a string) instead of refusing
        (
            {"custom_id": "a", "params": message_params(temperature=math.nan)},
            "params.temperature is nan, and JSON has no",
        ),
        ({"custom_id": "a", "params": message_params(temperature=-math.inf)}, "params.temperature is -inf"),
        ({"custom_id": "a", "params": message_params(stop_sequences={"x"})}, "params.stop_sequences is a set;"),
        (
            {"custom_id": "a", "params": message_params(metadata={"user_id": b"u"})},
            "params.metadata.user_id is a bytes",
        ),
        ({"custom_id": "a", "params": message_params(metadata={1: "u"})}, "params.metadata has the key 1"),
        (
            {"custom_id": "a", "params": message_params(metadata={"at": datetime.date(2026, 1, 1)})},
            "metadata.at is a date",
        ),
        (
            {
                "custom_id": "a",
                "params": message_params(messages=[{"role": "user", "content": [{"t": decimal.Decimal(1)}]}]),
            },
            "params.messages[0].content[0].t is a Decimal",
        ),
        (
            {"custom_id": "a", "params": message_params("\ud800")},
            "text that is not valid Unicode (surrogates not allowed",
        ),
        (
            {
                "custom_id": "a",
                "params": message_params(metadata=functools.reduce(lambda x, _: [x], range(100_000), [])),
            },
            "nested too deeply",
        ),
    ],
)
def test_each_kind_of_bad_request_is_named(request_: object, reason: str) -> None:
    _prepared, problems, bad = prepare_requests(_numbered([request_]))
    assert bad == 1
    assert reason in problems[0].reason
    assert problems[0].line == 1


def test_problems_are_counted_in_full_but_only_the_first_few_are_kept() -> None:
    requests: list[object] = [{"custom_id": f"bad {i}", "params": message_params()} for i in range(25)]
    prepared, problems, bad = prepare_requests(_numbered(requests))
    assert bad == 25 and len(problems) == 10 and prepared.requests_read == 25
    assert (
        str(problems[0]) == "line 1 (custom_id 'bad 0'): custom_id must be 1-64 characters of letters, digits, "
        "'_' or '-'"
    )


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
    build = template_params_builder(
        {
            "model": "claude-haiku-5-5",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "Rate {text} in {{json}}"}],
        }
    )
    rows = [(2, {"id": "r1", "text": "great"}), (3, {"id": "", "text": "x"}), (4, {"id": "r3"})]
    out = list(rows_to_requests(rows, custom_id_column="id", build_params=build))
    assert out[0] == (
        2,
        {
            "custom_id": "r1",
            "params": {
                "model": "claude-haiku-5-5",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "Rate great in {json}"}],
            },
        },
    )
    assert isinstance(out[1][1], Problem) and "'id' is missing" in out[1][1].reason
    assert (
        isinstance(out[2][1], Problem)
        and out[2][1].reason == "placeholder {text} names no column of the row (its columns: 'id')"
    )


# ---- the JSONL road: the same checks with less Python per line, the same bytes and fingerprint ----


def _jsonl(requests: list[object]) -> list[bytes]:
    return [json.dumps(r).encode() + b"\n" for r in requests]


Prepared = tuple[PreparedRequests, list[Problem], int]


def _both_roads(
    lines: list[bytes], defaults: RequestDefaults | None = None, **limits: int
) -> tuple[Prepared, Prepared]:
    """The JSONL road and the reference road (the same lines decoded first, then given as entries)."""
    defaults = defaults or RequestDefaults()
    return (
        prepare_requests(iter_jsonl(lines), defaults, **limits),
        prepare_requests(list(iter_jsonl(lines)), defaults, **limits),
    )


def _items(prepared: PreparedRequests) -> list[bytes]:
    return [bytes(prepared.buffer[start:end]) for start, end in zip(prepared.starts, prepared.ends, strict=True)]


def _same(fast: PreparedRequests, reference: PreparedRequests) -> None:
    """The same requests, each the same JSON, and a record of the reference's is recognised."""
    assert fast.custom_ids == reference.custom_ids
    assert [json.loads(item) for item in _items(fast)] == [json.loads(item) for item in _items(reference)]
    assert json.loads(fast.body(0, len(fast))) == json.loads(reference.body(0, len(reference)))
    assert fast.fingerprint == FINGERPRINT_PREFIX + hashlib.sha256(fast.buffer).hexdigest()
    assert reference.as_written == 0 and fast.recognises(fast.fingerprint)
    assert not fast.recognises(hashlib.sha256(fast.buffer).hexdigest())  # (the pre-release form: not known)


def _identical(one: PreparedRequests, other: PreparedRequests) -> None:
    """Byte for byte: how a JSONL input is read (whole, in blocks, line by line) changes nothing sent."""
    assert one.buffer == other.buffer and one.fingerprint == other.fingerprint
    assert (list(one.starts), list(one.ends), one.custom_ids, one.as_written) == (
        list(other.starts),
        list(other.ends),
        other.custom_ids,
        other.as_written,
    )


GOLDEN_LINES = [
    b'{"custom_id": "spaced", "params": {"model": "claude-sonnet-5-5", "max_tokens": 64, '
    b'"messages": [{"role": "user", "content": "caf\\u00e9 \\/ \\"q\\" \\t \\u0001 \\ud83d\\ude00"}]}}\n',
    '{"custom_id":"raw-utf8","params":{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"日本 é"}]}}\n'.encode(),
    b'  {"params": {"messages": [{"role": "assistant", "content": [{"type": "text", "text": "x"}]}], '
    b'"max_tokens": 5, "model": "m"}, "custom_id": "params-first"} \r\n',
    b"\n",
    b'{"custom_id":"numbers","params":{"model":"m","max_tokens":7,"temperature":0.7,"top_p":1E2,"x":1e-05,'
    b'"big":12345678901234567890,"neg":-0,"f":-0.0,"messages":[{"role":"user","content":"n"}]}}\n',
    b'{"custom_id":"dup-keys","params":{"model":"a","max_tokens":3,"model":"b","messages":[{"role":"user",'
    b'"content":"d","content":"e"}]}}\n',
    b'{"custom_id":"defaults","params":{"messages":[{"role":"user","content":"fill me"}]}}\n',
    b'{"custom_id":"stream-false","params":{"model":"m","max_tokens":2,"stream":false,"system":null,'
    b'"tools":[{"name":"t","input_schema":{"type":"object","properties":{"a":{"type":"string"}}}}],'
    b'"messages":[{"role":"user","content":"s"}]}}',
]
GOLDEN_DEFAULTS = RequestDefaults(model="claude-haiku-5-5", max_tokens=99, system=[{"type": "text", "text": "sys"}])
# What this version's first release computed for GOLDEN_LINES, with GOLDEN_DEFAULTS and without the
# default system: a record written then must still recognise the same input, or a retried task would
# submit (and pay for) it again. The pre-release form (the sha256 of every request re-encoded, without
# the prefix) is not recognised: such a record is a different input.
GOLDEN_FINGERPRINTS = {
    "system": "v2:a0d7308d43318b4bcfdd00cea16e17dd548e1a174538c594741c333efd16d5b3",
    "no system": "v2:d495fc156e393fddbd84239c3969471435b1f5df10998410b5939eec5b11d5b5",
}
PRE_RELEASE_FINGERPRINTS = {
    "system": "a0d7308d43318b4bcfdd00cea16e17dd548e1a174538c594741c333efd16d5b3",
    "no system": "e706aa783cc3687f03349aefae0f3838c9ffbf5564d898b6b3be25427eeb59fe",
}


@pytest.mark.parametrize("which", sorted(GOLDEN_FINGERPRINTS))
@pytest.mark.parametrize("as_file", [False, True])
def test_a_retry_recognises_the_same_input_by_the_fingerprint_it_recorded(which: str, as_file: bool) -> None:
    """Spacing, key order, escapes, unicode, floats, big ints, duplicate keys and defaults: the
    fingerprint recorded for these lines is the same whether they are read whole or line by line."""
    defaults = GOLDEN_DEFAULTS if which == "system" else RequestDefaults(model="claude-haiku-5-5", max_tokens=99)
    source = io.BytesIO(b"".join(GOLDEN_LINES)) if as_file else GOLDEN_LINES
    fast, problems, bad = prepare_requests(iter_jsonl(source), defaults)
    reference, _, _ = prepare_requests(list(iter_jsonl(GOLDEN_LINES)), defaults)
    assert bad == 0 and not problems
    _same(fast, reference)
    assert fast.fingerprint == GOLDEN_FINGERPRINTS[which] and fast.recognises(GOLDEN_FINGERPRINTS[which])
    assert not fast.recognises(GOLDEN_FINGERPRINTS["no system" if which == "system" else "system"])
    assert not fast.recognises(PRE_RELEASE_FINGERPRINTS[which])
    assert not fast.recognises(FINGERPRINT_PREFIX + "0" * 64)


def test_a_line_a_typed_decode_accepts_is_sent_as_written() -> None:
    spaced = json.dumps({"params": message_params("caf\u00e9"), "custom_id": "first"}).encode()
    compact = json.dumps({"custom_id": "second", "params": message_params()}, separators=(",", ":")).encode()
    filled = b'{"custom_id": "third", "params": {"messages": [{"role": "user", "content": "x"}]}}'
    prepared, _, bad = prepare_requests(
        iter_jsonl(io.BytesIO(b"\n".join([spaced, compact, filled]) + b"\n")),
        RequestDefaults(model="claude-haiku-5-5", max_tokens=9),
    )
    assert bad == 0 and prepared.as_written == 2
    assert prepared.body(0, 3) == (
        b'{"requests":[' + spaced + b"," + compact + b',{"custom_id":"third","params":'
        b'{"messages":[{"role":"user","content":"x"}],"model":"claude-haiku-5-5",'
        b'"max_tokens":9}}]}'
    )
    assert _items(prepared) == [spaced, compact, _items(prepared)[2]]


def test_a_clean_file_is_taken_a_block_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    per_line = prepare_module._Preparer._add_lines
    monkeypatch.setattr(
        prepare_module._Preparer,
        "_add_lines",
        lambda self, lines, decoder: calls.append(1) or per_line(self, lines, decoder),
    )
    data = b"".join(_jsonl(make_requests(500)))
    prepared, _, bad = prepare_requests(iter_jsonl(io.BytesIO(data)))
    assert bad == 0 and not calls and prepared.as_written == 500
    assert prepared.body(0, 500) == b'{"requests":[' + data.rstrip(b"\n").replace(b"\n", b",") + b"]}"
    by_lines, _, _ = prepare_requests(iter_jsonl(data.splitlines()))
    _identical(prepared, by_lines)
    assert calls


def test_a_jsonl_file_finds_the_same_problems_as_the_same_requests_given_as_dicts() -> None:
    bad: list[object] = [
        {"custom_id": "a b", "params": message_params()},
        {"custom_id": "x" * 65, "params": message_params()},
        {"custom_id": "a\n", "params": message_params()},
        {"custom_id": 5, "params": message_params()},
        {"custom_id": "", "params": message_params()},
        {"custom_id": "caf\u00e9", "params": message_params()},
        {"params": message_params()},
        {"custom_id": "p1"},
        {"custom_id": "p2", "params": [1]},
        {"custom_id": "p3", "params": message_params(), "extra": 1},
        {"custom_id": "p4", "params": {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}},
        {"custom_id": "p5", "params": message_params(max_tokens=True)},
        {"custom_id": "p6", "params": message_params(max_tokens=5.0)},
        {"custom_id": "p7", "params": message_params(max_tokens=0)},
        {"custom_id": "p8", "params": message_params(messages=[])},
        {"custom_id": "p9", "params": message_params(messages=[{"role": "system", "content": "x"}])},
        {"custom_id": "p10", "params": message_params(messages=[{"role": "user", "content": ""}])},
        {"custom_id": "p11", "params": message_params(messages=[{"role": "user", "content": []}])},
        {"custom_id": "p12", "params": message_params(stream=True)},
        {"custom_id": "p13", "params": message_params(stream=0)},
        {"custom_id": "p14", "params": message_params(speed="fast")},
        {"custom_id": "p15", "params": message_params(model=None)},
        {"custom_id": "p16", "params": message_params(messages=[{"role": "user", "content": {"text": "x"}}])},
        {"custom_id": "p17", "params": message_params(messages=["hi"])},
        {"custom_id": "p18", "params": message_params(messages={"role": "user", "content": "x"})},
        {"custom_id": "req-1", "params": message_params()},  # a duplicate
        "text",
        [1],
        None,
        [{"custom_id": "two-in-one", "params": message_params()}, {"custom_id": "two", "params": message_params()}],
    ]
    good = [*make_requests(3), {"custom_id": "s", "params": message_params(stream=False)}]
    lines = [*_jsonl(good), b"\n", b"{oops\n", *_jsonl(bad), b"   \r\n"]

    (_, fast_problems, fast_bad), (_, problems, bad_count) = _both_roads(lines)

    assert fast_bad == bad_count == len(bad) + 1
    assert fast_problems == problems
    assert [p.line for p in problems] == list(range(6, 16))
    for kept in range(0, len(bad), 10):  # the ones past SHOWN_PROBLEMS are counted, not kept: check them too
        assert prepare_requests(iter_jsonl(_jsonl(bad[kept:])))[1] == prepare_requests(_numbered(bad[kept:]))[1]


def test_a_bad_line_in_the_middle_is_named_by_its_line_number_and_nothing_is_prepared() -> None:
    lines = _jsonl(make_requests(1000))
    lines[499] = b'{"custom_id": "req-499", "params": {"model": "m", "max_tokens": "64", "messages": []}}\n'
    prepared, problems, bad = prepare_requests(iter_jsonl(lines))
    assert bad == 1
    assert [str(p) for p in problems] == [
        "line 500 (custom_id 'req-499'): params.max_tokens is missing or not "
        "an integer (set it per request or with max_tokens=)"
    ]
    assert len(prepared) == 499  # what was built before the bad line, which the caller never sends


def test_duplicate_custom_ids_name_the_line_that_had_it_first() -> None:
    lines = _jsonl([*make_requests(5), make_requests(3)[2], *make_requests(2, "other"), make_requests(1)[0]])
    (_, problems, bad), (_, reference_problems, _) = _both_roads(lines)
    assert bad == 2 and problems == reference_problems
    assert [str(p) for p in problems] == [
        "line 6 (custom_id 'req-2'): duplicate custom_id (first seen on line 3)",
        "line 9 (custom_id 'req-0'): duplicate custom_id (first seen on line 1)",
    ]


def test_a_line_that_is_not_utf_8_is_a_problem_not_a_crash() -> None:
    lines = [*_jsonl(make_requests(2)), b'{"custom_id": "x", "params": {"messages": "\xff"}}\n']
    _, problems, bad = prepare_requests(iter_jsonl(lines))
    assert bad == 1 and problems[0].line == 3
    assert problems[0].reason.startswith("not valid UTF-8: byte 0xff at byte 44 of the line")
    assert list(iter_jsonl(lines))[2] == (3, problems[0])


def test_defaults_fill_jsonl_requests_after_their_own_keys() -> None:
    requests = [
        {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}},
        {"custom_id": "b", "params": message_params(model="claude-opus-5-5", max_tokens=7)},
        {"custom_id": "c", "params": {"messages": [{"role": "user", "content": "y"}], "system": None}},
    ]
    defaults = RequestDefaults(model="claude-haiku-5-5", max_tokens=99, system=[{"type": "text", "text": "s"}])
    (fast, _, bad), _ = _both_roads(_jsonl(requests), defaults)
    as_dicts, _, _ = prepare_requests(_numbered(requests), defaults)
    assert bad == 0
    _same(fast, as_dicts)
    assert list(json.loads(fast.body(0, 1))["requests"][0]["params"]) == ["messages", "model", "max_tokens", "system"]


@pytest.mark.parametrize(
    "defaults", [RequestDefaults(model=""), RequestDefaults(max_tokens=0), RequestDefaults(system=[{"when": object()}])]
)
def test_a_default_that_is_itself_bad_is_named_as_the_dicts_would_be(defaults: RequestDefaults) -> None:
    lines = _jsonl([{"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}}, *make_requests(2)])
    (fast, problems, bad), (reference, reference_problems, reference_bad) = _both_roads(lines, defaults)
    assert (problems, bad) == (reference_problems, reference_bad) and bad >= 1
    assert problems[0].line == 1
    assert fast.buffer == reference.buffer


def test_random_inputs_take_either_road_to_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261122)
    pieces = ["x", "caf\u00e9", "\u65e5\u672c", "\n", '"', "\\", "\u0001", "\U0001f600", " "]
    variants = [
        lambda p: p,
        lambda p: {**p, "temperature": rng.choice([0, 0.5, 1e-7, 2])},
        lambda p: {k: p[k] for k in reversed(list(p))},
        lambda p: {**p, "messages": [{"role": "user", "content": [{"type": "text", "text": "t"}]}]},
        lambda p: {**p, "max_tokens": rng.choice([0, -1, True, 1.5, "8", None, 2**70])},
        lambda p: {**p, "stream": rng.choice([False, True, None])},
        lambda p: {k: v for k, v in p.items() if k != rng.choice(["model", "max_tokens", "messages"])},
    ]
    for _ in range(20):
        requests: list[object] = []
        for i in range(rng.randint(1, 60)):
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
            params = rng.choice(variants)(message_params(text))
            custom_id = rng.choice([f"r-{i}", f"r-{i}", f"r-{i}", f"r-{rng.randint(0, i)}", f"r {i}"])
            requests.append({"custom_id": custom_id, "params": params})
        dumps = rng.choice([json.dumps, lambda r: json.dumps(r, ensure_ascii=False, separators=(",", ":"))])
        lines = [dumps(r).encode() + rng.choice([b"\n", b"\r\n", b" \n"]) for r in requests]
        defaults = rng.choice([RequestDefaults(), RequestDefaults(model="m", max_tokens=3, system="s")])
        (fast, problems, bad), (reference, reference_problems, reference_bad) = _both_roads(lines, defaults)
        assert (problems, bad) == (reference_problems, reference_bad)
        monkeypatch.setattr(read_module, "READ_BYTES", rng.choice([50, 700, 5000, 1 << 20]))
        as_file, file_problems, file_bad = prepare_requests(iter_jsonl(io.BytesIO(b"".join(lines))), defaults)
        assert (file_problems, file_bad) == (problems, bad)
        if not bad:
            _same(fast, reference)
            _identical(as_file, fast)


def test_the_block_road_leaves_every_doubtful_block_to_the_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two requests on one line, blank and spaced lines, CRLF, a duplicate within a block or across
    blocks, a request asking to stream, bytes that are not UTF-8: named, numbered and built as line by
    line would."""
    good = _jsonl(make_requests(40))
    two_in_one = good[5].rstrip(b"\n") + b"," + _jsonl([{"custom_id": "extra", "params": message_params()}])[0]
    cases = {
        "two in one": [*good[:5], two_in_one, *good[6:]],
        "blank": [*good[:7], b"\n", b"  \n", *good[7:]],
        "crlf": [line.rstrip(b"\n") + b"\r\n" for line in good],
        "leading space": [*good[:9], b" " + good[9], *good[10:]],
        "dup in block": [*good, good[3]],
        "dup far": [*good, *_jsonl(make_requests(30, "more")), good[0]],
        "first line blank": [b"\n", *good],
        "stream": [*good[:3], *_jsonl([{"custom_id": "s", "params": message_params(stream=True)}]), *good[3:]],
        "two in one spaced": [*good[:5], good[5].rstrip(b"\n") + b" " + good[6], *good[7:]],
        # two values on one line and one value over two lines: as many values as lines, none of them a line
        "split": [
            *good[:5],
            good[5].rstrip(b"\n") + b" " + good[6][: good[6].index(b"{", 2)].rstrip() + b"\n",
            good[6][good[6].index(b"{", 2) :],
            *good[7:],
        ],
        # msgspec does not check the UTF-8 of a value it skips (an unchecked key) or keeps raw (content blocks)
        "bad utf-8": [*good[:4], good[4].replace(b'"params": {', b'"params": {"x": "\xff", '), *good[5:]],
        "bad utf-8 raw": [
            *good[:4],
            good[4].replace(b'"content": "', b'"content": [{"text": "\xff"}], "y": "'),
            *good[5:],
        ],
    }
    for name, lines in cases.items():
        for block in (64, 600, 1 << 20):
            monkeypatch.setattr(read_module, "READ_BYTES", block)
            as_file, problems, bad = prepare_requests(iter_jsonl(io.BytesIO(b"".join(lines))))
            by_lines, line_problems, line_bad = prepare_requests(iter_jsonl(lines))
            assert (problems, bad) == (line_problems, line_bad), (name, block)
            bad_lines = {
                "two in one": [6],
                "dup in block": [41],
                "dup far": [71],
                "stream": [4],
                "bad utf-8": [5],
                "bad utf-8 raw": [5],
                "split": [6, 7],
                "two in one spaced": [6],
            }.get(name, [])
            assert [p.line for p in problems] == bad_lines, (name, block)
            if not bad:
                _identical(as_file, by_lines)
                assert len(as_file) == 40


def test_the_fingerprint_hashed_while_reading_is_the_sha256_of_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepared_module, "_HASH_BLOCK_BYTES", 500)
    monkeypatch.setattr(hashing_module, "_BACKGROUND_HASH_BYTES", 1)
    prepared, _, _ = prepare_requests(iter_jsonl(_jsonl(make_requests(200))))
    assert prepared._fingerprint is not None  # hashed on the way, not when asked
    assert prepared.fingerprint == FINGERPRINT_PREFIX + hashlib.sha256(prepared.buffer).hexdigest()


def test_a_jsonl_file_checks_the_same_read_whole_in_blocks_or_by_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"".join(
        [
            *_jsonl(make_requests(30)),
            b"\n",
            b'  {"custom_id": "w", "params": ' + json.dumps(message_params("\u00e9\u65e5")).encode() + b"} \r\n",
            *_jsonl(make_requests(3, "tail")),
        ]
    )[:-1]
    monkeypatch.setattr(read_module, "READ_BYTES", 7)
    by_lines, _, _ = prepare_requests(iter_jsonl(data.splitlines(keepends=True)))
    without_newlines, _, _ = prepare_requests(iter_jsonl(data.splitlines()))
    as_file, _, _ = prepare_requests(iter_jsonl(io.BytesIO(data)))
    in_blocks, _, _ = prepare_requests(iter_jsonl_blocks(data[i : i + 100] for i in range(0, len(data), 100)))
    as_dicts, _, _ = prepare_requests(list(iter_jsonl(io.BytesIO(data))))
    for prepared in (as_file, in_blocks):
        _identical(prepared, by_lines)
    _same(by_lines, as_dicts)
    _same(without_newlines, as_dicts)  # the CR splitlines() took off is all that differs from by_lines
    assert without_newlines.buffer == by_lines.buffer.replace(b"} \r,", b"} ,")
    assert len(by_lines) == 34 and by_lines.custom_ids[-1] == "tail-2"
    assert json.loads(by_lines.body(0, len(by_lines)))["requests"][30]["custom_id"] == "w"
    assert list(iter_jsonl(io.BytesIO(data))) == list(iter_jsonl(data.splitlines(keepends=True)))
    assert [n for n, _ in iter_jsonl(io.BytesIO(data))] == [*range(1, 31), *range(32, 36)]


def test_a_bad_line_in_a_block_boundary_is_still_named_by_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _jsonl(make_requests(50))
    lines[37] = b'{"custom_id": "req-37", "params": ' + json.dumps(message_params()).encode() + b"\n"
    monkeypatch.setattr(read_module, "READ_BYTES", 64)
    _, problems, bad = prepare_requests(iter_jsonl(io.BytesIO(b"".join(lines))))
    assert bad == 1 and problems[0].line == 38 and "not valid JSON" in problems[0].reason


@pytest.mark.parametrize("limit", [1, 2, 7, 100_000])
def test_jsonl_splits_at_the_count_limit_like_the_dicts(limit: int) -> None:
    requests = make_requests(25)
    (fast, _, _), (reference, _, _) = _both_roads(_jsonl(requests))
    plans = plan_batches(fast, max_requests=limit)
    assert [(p.first, p.stop) for p in plans] == [
        (p.first, p.stop) for p in plan_batches(reference, max_requests=limit)
    ]
    assert plans == _plans_one_by_one(fast, limit, 10**9)
    assert [p.request_count for p in plans] == [min(limit, 25 - first) for first in range(0, 25, limit)]


def test_jsonl_splits_at_the_size_limit_to_the_byte() -> None:
    requests = make_requests(40)
    fast, _, _ = prepare_requests(iter_jsonl(_jsonl(requests)))
    exactly_three = fast.body_size(0, 3)
    for max_body_bytes in (exactly_three - 1, exactly_three, exactly_three + 1):
        plans = plan_batches(fast, max_body_bytes=max_body_bytes)
        assert plans == _plans_one_by_one(fast, 100_000, max_body_bytes)
        assert all(p.body_bytes <= max_body_bytes for p in plans)
        assert plans[0].request_count == (3 if max_body_bytes >= exactly_three else 2)
        assert sum(p.request_count for p in plans) == 40


def test_a_request_over_the_size_limit_is_a_problem_on_the_jsonl_road_too() -> None:
    lines = _jsonl([*make_requests(2), {"custom_id": "big", "params": message_params("x" * 500)}])
    (fast, problems, bad), (_, reference_problems, _) = _both_roads(lines, max_body_bytes=400)
    assert bad == 1 and problems == reference_problems and problems[0].line == 3
    assert "over the 385-byte batch body limit" in problems[0].reason
    assert fast.custom_ids == ["req-0", "req-1"]


def _plans_one_by_one(prepared: PreparedRequests, max_requests: int, max_body_bytes: int) -> list[BatchPlan]:
    """The split as first written (one request at a time), to hold the bisection to."""
    plans: list[BatchPlan] = []
    first = 0
    while first < len(prepared):
        stop = first + 1
        while (
            stop < len(prepared)
            and stop - first < max_requests
            and prepared.body_size(first, stop + 1) <= max_body_bytes
        ):
            stop += 1
        plans.append(BatchPlan(len(plans), first, stop, prepared.body_size(first, stop)))
        first = stop
    return plans


def test_the_bisected_split_matches_the_one_by_one_split_on_uneven_sizes() -> None:
    rng = random.Random(7)
    requests = [{"custom_id": f"r-{i}", "params": message_params("x" * rng.randint(0, 300))} for i in range(300)]
    prepared, _, _ = prepare_requests(iter_jsonl(_jsonl(requests)))
    for max_requests, max_body_bytes in [(100_000, 2_000), (7, 5_000), (13, 1_000), (1, 10_000), (100_000, 10**8)]:
        assert plan_batches(prepared, max_requests=max_requests, max_body_bytes=max_body_bytes) == _plans_one_by_one(
            prepared, max_requests, max_body_bytes
        )


def test_a_follow_up_round_recognises_only_its_own_requests_as_written() -> None:
    lines = _jsonl(make_requests(10))
    as_written, _, _ = prepare_requests(iter_jsonl(io.BytesIO(b"".join(lines))))
    encoded, _, _ = prepare_requests(list(iter_jsonl(lines)))
    again = as_written.subset(["req-2", "req-7"])
    assert bytes(again.buffer) == lines[2].rstrip(b"\n") + b"," + lines[7].rstrip(b"\n")
    assert again.recognises(as_written.subset(["req-7", "req-2"]).fingerprint)
    assert not again.recognises(as_written.subset(["req-2"]).fingerprint)
    assert not again.recognises(encoded.subset(["req-2", "req-7"]).fingerprint)  # (other bytes: re-encoded)
    assert not again.recognises(hashlib.sha256(encoded.subset(["req-2", "req-7"]).buffer).hexdigest())


def test_a_number_too_big_for_msgspec_in_an_unchecked_field_is_sent_as_written() -> None:
    """msgspec cannot decode 1e400 to a Python value, and need not: the field is not checked."""
    lines = [
        json.dumps({"custom_id": "big", "params": {**message_params(), "metadata": {"n": 1}}})
        .encode()
        .replace(b'"n": 1', b'"n": 1e400')
    ]
    prepared, _, bad = prepare_requests(iter_jsonl(lines))
    assert bad == 0 and prepared.as_written == 1 and b"1e400" in prepared.buffer
    assert not prepared.recognises("0" * 64)


def test_every_request_is_counted_after_the_first_bad_one_on_every_road(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "N of M requests are invalid": M counts the good requests after a bad one too (they are not kept)."""
    requests: list[object] = [
        *make_requests(3),
        {"custom_id": "bad one", "params": message_params()},
        *make_requests(6, "after"),
        "not a request",
        *make_requests(2, "tail"),
    ]
    lines = [*_jsonl(requests[:5]), b"\n", b"{oops\n", *_jsonl(requests[5:])]
    monkeypatch.setattr(read_module, "READ_BYTES", 300)
    for name, entries in {
        "dicts": _numbered(requests),
        "lines": iter_jsonl(lines),
        "file": iter_jsonl(io.BytesIO(b"".join(lines))),
        "decoded lines": list(iter_jsonl(lines)),
    }.items():
        prepared, _, bad = prepare_requests(entries)
        expected_bad = 2 if name == "dicts" else 3
        assert (bad, prepared.requests_read, len(prepared)) == (expected_bad, 11 + expected_bad, 3), name
    clean, _, bad = prepare_requests(iter_jsonl(_jsonl(make_requests(7))))
    assert (bad, clean.requests_read, len(clean)) == (0, 7, 7)


@pytest.mark.parametrize("system", [math.nan, {"x"}, b"s"])
def test_a_default_msgspec_would_change_is_refused_on_every_road(system: object) -> None:
    lines = _jsonl(
        [
            {"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}},
            *({"custom_id": f"own-{i}", "params": message_params(system="own")} for i in range(2)),
        ]
    )
    defaults = RequestDefaults(model="m", max_tokens=3, system=system)  # type: ignore[arg-type]
    (fast, problems, bad), (_, reference_problems, reference_bad) = _both_roads(lines, defaults)
    assert (problems, bad) == (reference_problems, reference_bad) and bad == 1
    assert problems[0].line == 1 and "params.system is" in problems[0].reason
    assert fast.requests_read == 3


def test_tuples_and_big_integers_are_json_and_pass() -> None:
    params = message_params(stop_sequences=("a", "b"), metadata={"n": 2**70})
    prepared, problems, bad = prepare_requests(_numbered([{"custom_id": "a", "params": params}]))
    assert (bad, problems) == (0, [])
    assert json.loads(prepared.body(0, 1))["requests"][0]["params"]["stop_sequences"] == ["a", "b"]
