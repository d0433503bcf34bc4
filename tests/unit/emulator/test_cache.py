"""The emulator's prompt cache: reads, writes, TTLs, minimum lengths and mixed-TTL billing positions."""

from __future__ import annotations

import json

from airflow_provider_claude_batch.emulator.cache import PromptCache, minimum_tokens
from airflow_provider_claude_batch.emulator.outcomes import OutcomePlanner
from airflow_provider_claude_batch.emulator.store import BatchStore

LONG = "y" * 8000  # ~2,000 tokens: above Sonnet's 1,024 minimum
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}
FIVE_MINUTES = {"type": "ephemeral"}


def _params(system: object, text: str = "row", model: str = "claude-sonnet-4-6", **extra: object) -> bytes:
    body = {"model": model, "max_tokens": 5, "system": system, "messages": [{"role": "user", "content": text}]}
    return json.dumps({**body, **extra}).encode()


def _system(control: dict[str, str] | None = FIVE_MINUTES, text: str = LONG) -> list[dict[str, object]]:
    block: dict[str, object] = {"type": "text", "text": text}
    if control is not None:
        block["cache_control"] = control
    return [block]


def test_a_prefix_is_written_once_then_read_within_its_ttl_and_written_again_after() -> None:
    cache = PromptCache()
    first = cache.use(_params(_system(ONE_HOUR), "a"), now=0)
    assert first.write_1h > 2000 and first.read == 0 and first.write_5m == 0
    second = cache.use(_params(_system(ONE_HOUR), "b"), now=3000)
    assert (second.read, second.write_1h) == (first.write_1h, 0)
    # The hit at 3,000 s refreshed the entry: still there 3,500 s later, gone an hour after that.
    assert cache.use(_params(_system(ONE_HOUR), "c"), now=6500).read == first.write_1h
    assert cache.use(_params(_system(ONE_HOUR), "d"), now=6500 + 3601).read == 0


def test_a_five_minute_entry_expires_after_five_minutes() -> None:
    cache = PromptCache()
    written = cache.use(_params(_system()), now=0).write_5m
    assert written > 0
    assert cache.use(_params(_system()), now=299).read == written
    assert cache.use(_params(_system()), now=299 + 301).read == 0


def test_another_model_or_another_prefix_does_not_read_the_entry() -> None:
    cache = PromptCache()
    cache.use(_params(_system(ONE_HOUR)), now=0)
    assert cache.use(_params(_system(ONE_HOUR), model="claude-opus-4-8"), now=1).read == 0
    assert cache.use(_params(_system(ONE_HOUR, text=LONG + "!")), now=1).read == 0


def test_a_prefix_under_the_models_minimum_caches_nothing() -> None:
    assert minimum_tokens("claude-haiku-4-5") == 4096
    assert minimum_tokens("claude-haiku-4-5-20251001") == 4096
    cache = PromptCache()
    use = cache.use(_params(_system(ONE_HOUR), model="claude-haiku-4-5"), now=0)  # ~2,000 < 4,096
    assert (use.read, use.write_5m, use.write_1h) == (0, 0, 0)
    assert not cache.entries


def test_mixed_ttls_bill_reads_at_a_1h_writes_to_b_and_5m_writes_to_c() -> None:
    """A = the hit, B = the last 1h breakpoint after A, C = the last breakpoint (API facts §9)."""
    cache = PromptCache()
    tools = [{"name": "t", "description": "d" * 8000, "input_schema": {"type": "object"}, "cache_control": ONE_HOUR}]
    cache.use(_params(_system(None), tools=tools), now=0)  # writes the tools prefix (position A below)
    mixed = _params(_system(ONE_HOUR), tools=tools, messages=None)
    body = json.loads(mixed)
    body["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": "z" * 8000, "cache_control": FIVE_MINUTES}]}
    ]
    use = cache.use(json.dumps(body).encode(), now=10)
    assert use.read > 2000  # A: the tools
    assert 1900 < use.write_1h < 2100  # B - A: the system block
    assert 1900 < use.write_5m < 2100  # C - B: the message block


def test_a_top_level_cache_control_marks_the_last_block() -> None:
    cache = PromptCache()
    params = _params(LONG, text="the same question", cache_control=ONE_HOUR)
    assert cache.use(params, now=0).write_1h > 2000
    assert cache.use(params, now=1).read > 2000


def test_batch_hits_follow_the_configured_probability_and_messages_calls_always_hit() -> None:
    store = BatchStore()
    store.config.update({"cache_hit_probability": 0.5})
    items = [{"custom_id": f"r{i}", "params": json.loads(_params(_system(ONE_HOUR), f"row {i}"))} for i in range(400)]
    batch = store.create(json.dumps({"requests": items}).encode(), "2026-10-21")
    reads = sum(1 for r in batch.records if r.cache_read)
    writes = sum(1 for r in batch.records if r.cache_write_1h)
    assert reads + writes == 400
    assert 150 < reads < 250  # about half, decided per request digest
    other = BatchStore()
    other.config.update({"cache_hit_probability": 0.5})
    replay = other.create(json.dumps({"requests": items}).encode(), "2026-10-21")
    assert [r.cache_read for r in replay.records] == [r.cache_read for r in batch.records]  # deterministic
    message = OutcomePlanner().plan("m", _params(_system(ONE_HOUR), "x"), "2026-10-21", cache=store.cache_visit())
    assert message.cache_read > 2000 and message.cache_write_1h == 0


def test_held_writes_are_readable_only_once_stored_so_calls_in_flight_together_all_write() -> None:
    cache = PromptCache()
    held_first: list[tuple[bytes, float, float]] = []
    held_second: list[tuple[bytes, float, float]] = []
    first = cache.use(_params(_system(ONE_HOUR), "a"), now=0, writes=held_first)
    second = cache.use(_params(_system(ONE_HOUR), "b"), now=1, writes=held_second)
    assert first.write_1h == second.write_1h > 2000 and second.read == 0  # both paid to write it
    cache.store(held_first)  # the first answer went out
    third = cache.use(_params(_system(ONE_HOUR), "c"), now=2, writes=[])
    assert (third.read, third.write_1h) == (first.write_1h, 0)
