"""The fast breakpoint placement agrees with the plain reference (tests/cache_reference.py) on random inputs."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

from airflow_provider_claude_batch.requests.caching import CACHE_CONTROL, add_cache_breakpoints
from airflow_provider_claude_batch.requests.prepare import prepare
from airflow_provider_claude_batch.requests.schema import cache_breakpoints
from tests.cache_reference import breakpoints

TEXTS = ["a" * 3000, "b" * 1500, "c" * 800, "short", "d" * 5000]


def _text(rng: random.Random) -> Any:
    text = rng.choice(TEXTS)
    return text if rng.random() < 0.5 else {"type": "text", "text": text}


def _request(rng: random.Random, number: int) -> dict[str, Any]:
    params: dict[str, Any] = {"model": rng.choice(["claude-sonnet-4-6", "claude-opus-5-5"]), "max_tokens": 5}
    if rng.random() < 0.3:
        params["tools"] = [
            {"name": f"t{i}", "input_schema": {}, "description": rng.choice(TEXTS)} for i in range(rng.randint(1, 2))
        ]
    if rng.random() < 0.7:
        system = _text(rng)
        params["system"] = system if isinstance(system, str) else [system, _text(rng)][: rng.randint(1, 2)]
    messages: list[dict[str, Any]] = []
    for turn in range(rng.randint(1, 3)):
        content: Any = _text(rng)
        if not isinstance(content, str):
            content = [content] + ([{"type": "thinking", "thinking": "t", "signature": "s"}] if turn % 2 else [])
        messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": content})
    if rng.random() < 0.5:
        messages.append({"role": "user", "content": f"question {number}"})
    params["messages"] = messages
    if rng.random() < 0.05:
        params["cache_control"] = {"type": "ephemeral"}
    if rng.random() < 0.3:  # part of the cache key: requests differing in it share no entry
        params["output_config"] = {"effort": rng.choice(["low", "high"])}
    return {"custom_id": f"r{number}", "params": params}


def _marked_path(params: dict[str, Any]) -> str | None:
    found = cache_breakpoints(params)
    if not found:
        return None
    ((path, control),) = found
    assert control == CACHE_CONTROL
    path = path.removeprefix("params.")
    if isinstance(params.get("system"), list) and path == "system[0]" and len(params["system"]) == 1:
        return path  # (a string system may have become this block: the reference names it "system")
    return path


@pytest.mark.parametrize("seed", range(12))
def test_the_fast_path_places_each_breakpoint_where_the_reference_does(seed: int) -> None:
    rng = random.Random(seed)
    requests = [_request(rng, n) for n in range(40)]
    prepared, problems, bad = prepare(list(enumerate(requests, start=1)))
    assert not bad, problems
    result, plan = add_cache_breakpoints(prepared)
    sent = msgspec.json.decode(result.body(0, len(result)))["requests"] if len(result) else []
    for index, request in enumerate(sent):  # each item's offsets frame exactly its request
        assert msgspec.json.decode(result.body(index, index + 1))["requests"] == [request]
    assert result.custom_ids == [r["custom_id"] for r in requests]
    expected = breakpoints(requests)
    for original, request in zip(requests, sent, strict=True):
        want = expected[original["custom_id"]]
        got = _marked_path(request["params"]) if b'"cache_control"' not in msgspec.json.encode(original) else None
        if want is None:
            assert got is None and request == original, original["custom_id"]
            continue
        # A string the breakpoint went on became a one-block list: "system" is then "system[0]" etc.
        assert got in (want, want + "[0]"), (original["custom_id"], want, got)
    assert plan.changed == sum(1 for v in expected.values() if v is not None)
