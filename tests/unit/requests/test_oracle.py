"""The fast path (msgspec schema, block decodes, the per-line road) agrees with the plain reference.

Hundreds of requests, each a valid one with one or two things changed, go through `prepare_requests`
as Python objects and as JSONL lines (in blocks, where whole blocks take the typed decode), with and
without the operator's defaults, and through tests/oracle_requests.py; every verdict must match.
"""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest

from airflow_provider_claude_batch.input.jsonl import iter_jsonl_blocks
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.prepare import RequestDefaults
from tests import oracle_requests

MISSING = object()
BASE: dict[str, Any] = {
    "custom_id": "req-1",
    "params": {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
}
CUSTOM_IDS = ["a", "A_b-9", "x" * 64, "x" * 65, "", "has space", "ünï", "semi;colon", "dot.ted", 7, None, ["a"]]
MODELS = ["claude-opus-4-5", "", 5, None, ["m"], MISSING]
MAX_TOKENS = [1, 64_000, 0, -1, True, False, 1.5, 2.0, "5", None, MISSING]
MESSAGES = [
    [{"role": "user", "content": "x"}],
    [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
    [],
    {},
    "hello",
    [{"role": "system", "content": "x"}],
    [{"role": "user"}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": []}],
    [{"content": "x"}],
    ["not an object"],
    MISSING,
]
EXTRAS: list[tuple[str, object]] = [
    ("stream", False),
    ("stream", True),
    ("speed", "fast"),
    ("temperature", 0.5),
    ("temperature", float("nan")),
    ("metadata", {"user_id": "u"}),
    ("system", "be brief"),
    ("system", [{"type": "text", "text": "ctx", "cache_control": {"type": "ephemeral"}}]),
    ("stop_sequences", ["END"]),
    ("top_k", float("inf")),
]
DEFAULTS = [RequestDefaults(), RequestDefaults(model="claude-sonnet-4-5", max_tokens=32)]


def _with(path: tuple[str, ...], value: object) -> dict[str, Any]:
    request = copy.deepcopy(BASE)
    target: Any = request
    for key in path[:-1]:
        target = target[key]
    if value is MISSING:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return request


def _cases() -> list[object]:
    cases: list[object] = [copy.deepcopy(BASE)]
    cases += [_with(("custom_id",), v) for v in CUSTOM_IDS]
    cases += [_with(("params", "model"), v) for v in MODELS]
    cases += [_with(("params", "max_tokens"), v) for v in MAX_TOKENS]
    cases += [_with(("params", "messages"), v) for v in MESSAGES]
    cases += [_with(("params", key), value) for key, value in EXTRAS]
    for model, max_tokens in itertools.product(MODELS, MAX_TOKENS):  # what the defaults may fill in
        request = _with(("params", "model"), model)
        request["params"] = _with(("params", "max_tokens"), max_tokens)["params"] | (
            {"model": model} if model is not MISSING else {}
        )
        if model is MISSING:
            request["params"].pop("model", None)
        cases.append(request)
    for messages, (key, value) in itertools.product(MESSAGES, EXTRAS):  # two things changed at once
        request = _with(("params", "messages"), messages)
        request["params"][key] = value
        cases.append(request)
    cases += [
        {**copy.deepcopy(BASE), "extra": 1},
        {"custom_id": "only"},
        {"params": BASE["params"]},
        {"custom_id": "p", "params": "not an object"},
        {"custom_id": "p", "params": None},
        [BASE],
        "a string",
        42,
        None,
    ]
    return cases


CASES = _cases()


def _fast_accepts(entries: object, defaults: RequestDefaults) -> bool:
    prepared, problems, bad = prepare_requests(entries, defaults)  # type: ignore[arg-type]
    return bad == 0 and not problems and len(prepared) == 1


def _fast_bad_count(entries: object, defaults: RequestDefaults) -> int:
    """How many requests of a whole input the fast path refuses (it names only the first few)."""
    return prepare_requests(entries, defaults)[2]  # type: ignore[arg-type]


def _oracle(requests: list[object], defaults: RequestDefaults) -> list[bool]:
    return oracle_requests.accepted(requests, defaults.given())


def _unique(cases: list[object]) -> list[object]:
    """Each case with its own custom_id where it has a valid string one, so cases do not collide."""
    out = []
    for index, case in enumerate(cases):
        case = copy.deepcopy(case)
        if isinstance(case, dict) and oracle_requests.valid_custom_id(case.get("custom_id")):
            case["custom_id"] = f"{case['custom_id'][:50]}-{index}"
        out.append(case)
    return out


def test_there_are_hundreds_of_cases_of_both_kinds() -> None:
    verdicts = _oracle(_unique(CASES), DEFAULTS[0]) + _oracle(_unique(CASES), DEFAULTS[1])
    assert len(verdicts) >= 400 and 50 <= sum(verdicts) <= len(verdicts) - 50


@pytest.mark.parametrize("defaults", DEFAULTS, ids=["no-defaults", "model-and-max-tokens-defaults"])
def test_python_requests_agree_with_the_reference(defaults: RequestDefaults) -> None:
    cases = _unique(CASES)
    fast = [_fast_accepts([(1, case)], defaults) for case in cases]
    expected = _oracle(cases, defaults)
    disagreements = [(case, f, e) for case, f, e in zip(cases, fast, expected, strict=True) if f != e]
    assert not disagreements, disagreements[:5]
    # All at once: the same number refused (valid requests after a bad one are checked, not kept).
    assert _fast_bad_count(list(enumerate(cases, start=1)), defaults) == expected.count(False)


@pytest.mark.parametrize("defaults", DEFAULTS, ids=["no-defaults", "model-and-max-tokens-defaults"])
@pytest.mark.parametrize("block_bytes", [64, 1 << 20], ids=["small-blocks", "one-block"])
def test_jsonl_lines_agree_with_the_reference(defaults: RequestDefaults, block_bytes: int) -> None:
    """JSONL: NaN and inf are written as the non-JSON tokens Python emits, so the line is undecodable."""
    cases = _unique(CASES)
    lines = [json.dumps(case).encode() + b"\n" for case in cases]
    fast = [_fast_accepts(iter_jsonl_blocks([line]), defaults) for line in lines]
    expected = _oracle(cases, defaults)
    data = b"".join(lines)
    blocks = [data[i : i + block_bytes] for i in range(0, len(data), block_bytes)]
    assert _fast_bad_count(iter_jsonl_blocks(blocks), defaults) == expected.count(False)
    disagreements = [(case, f, e) for case, f, e in zip(cases, fast, expected, strict=True) if f != e]
    assert not disagreements, disagreements[:5]


def test_a_repeated_custom_id_is_refused_where_it_repeats() -> None:
    cases: list[object] = [copy.deepcopy(BASE), _with(("params", "max_tokens"), 0), copy.deepcopy(BASE)]
    cases.append(_with(("custom_id",), "other"))
    _, problems, bad = prepare_requests(list(enumerate(cases, start=1)))
    assert _oracle(cases, DEFAULTS[0]) == [True, False, False, True]
    assert bad == 2 and {p.line for p in problems} == {2, 3}
