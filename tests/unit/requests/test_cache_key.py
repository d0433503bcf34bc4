"""The key of a request's first cache breakpoint: requests that would write the same cache entry share it."""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_claude_batch.requests.cache_blocks import first_breakpoint_key

MARK = {"type": "ephemeral", "ttl": "1h"}
SYSTEM = [{"type": "text", "text": "Label the review. " * 300, "cache_control": MARK}]


def _key(**params: Any) -> bytes | None:
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 5, **params}
    body.setdefault("messages", [{"role": "user", "content": "review 1"}])
    return first_breakpoint_key(json.dumps(body).encode())


def test_requests_sharing_the_prefix_up_to_the_breakpoint_share_the_key_whatever_follows() -> None:
    key = _key(system=SYSTEM)
    assert key is not None
    assert _key(system=SYSTEM, messages=[{"role": "user", "content": "another review"}]) == key
    assert _key(system=SYSTEM, max_tokens=99) == key  # not part of the prompt


def test_what_the_cache_key_holds_besides_the_blocks_tells_them_apart() -> None:
    key = _key(system=SYSTEM)
    assert _key(system=SYSTEM, model="claude-opus-4-8") != key
    assert _key(system=SYSTEM, output_config={"effort": "low"}) != key
    assert _key(system=[{**SYSTEM[0], "text": "Other. " * 300}]) != key


def test_no_breakpoint_no_key_and_a_nested_cache_control_field_is_not_one() -> None:
    assert _key(system="Label the review. " * 300) is None
    tool = {"name": "label", "input_schema": {"type": "object", "properties": {"cache_control": {"type": "string"}}}}
    assert _key(tools=[tool]) is None
    assert _key(tools=[{**tool, "cache_control": MARK}]) is not None
    assert first_breakpoint_key(b"not json") is None


def test_the_automatic_mode_marks_the_last_block() -> None:
    one = _key(system="Label. " * 300, cache_control={"type": "ephemeral"})
    assert one is not None
    assert _key(system="Label. " * 300, cache_control={"type": "ephemeral"}) == one
    other = _key(
        system="Label. " * 300, cache_control={"type": "ephemeral"}, messages=[{"role": "user", "content": "x"}]
    )
    assert other != one  # the last block differs


def test_params_whose_blocks_do_not_decode_have_no_key() -> None:
    assert _key(system=12) is None and _key(messages=[{"role": "user", "content": 5}]) is None
