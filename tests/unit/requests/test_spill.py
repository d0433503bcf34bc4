"""A large input's items in a spill file: the same bytes, offsets, batches and fingerprint as in memory,
with only the newest few kilobytes (here) held in the buffer."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import msgspec
import pytest

from airflow_provider_claude_batch.input.jsonl import iter_jsonl_blocks
from airflow_provider_claude_batch.requests import prepared as prepared_module
from airflow_provider_claude_batch.requests.caching import CACHE_CONTROL, add_cache_breakpoints
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.plan import plan_batches
from airflow_provider_claude_batch.requests.prepare import FINGERPRINT_PREFIX, PreparedRequests, prepare
from airflow_provider_claude_batch.requests.spill import SpillFile
from tests.helpers import make_requests

SPILL_ABOVE = 3_000


@pytest.fixture(autouse=True)
def _small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepared_module, "_SPILL_CHUNK_BYTES", 1_000)
    monkeypatch.setattr(prepared_module, "_HASH_BLOCK_BYTES", 700)
    monkeypatch.setattr(prepared_module, "_READ_CHUNK_BYTES", 333)


def _jsonl(requests: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in requests)


def _all_bytes(prepared: PreparedRequests) -> bytes:
    return b"".join(prepared.chunks(0, prepared.size))


def _in_blocks(data: bytes, size: int = 900) -> Any:
    return iter_jsonl_blocks(data[i : i + size] for i in range(0, len(data), size))


def test_a_spilled_input_is_byte_for_byte_the_in_memory_one() -> None:
    data = _jsonl(make_requests(300))
    in_memory, _, _ = prepare_requests(_in_blocks(data), spill_above=len(data) * 10)
    spilled, _, _ = prepare_requests(_in_blocks(data), spill_above=SPILL_ABOVE)
    assert not in_memory.spilled and spilled.spilled
    assert len(spilled.buffer) == 0  # everything is in the file once read
    assert _all_bytes(spilled) == bytes(in_memory.buffer) and spilled.size == len(in_memory.buffer)
    assert (list(spilled.starts), list(spilled.ends), spilled.custom_ids) == (
        list(in_memory.starts),
        list(in_memory.ends),
        in_memory.custom_ids,
    )
    assert spilled._fingerprint is not None  # hashed on the way, before each piece left memory
    assert spilled.fingerprint == in_memory.fingerprint
    assert spilled.fingerprint == FINGERPRINT_PREFIX + hashlib.sha256(bytes(in_memory.buffer)).hexdigest()
    plans = plan_batches(spilled, max_requests=70)
    assert plans == plan_batches(in_memory, max_requests=70) and len(plans) == 5
    for plan in plans:
        assert spilled.body(plan.first, plan.stop) == in_memory.body(plan.first, plan.stop)
        assert all(len(chunk) <= 333 for chunk in spilled.iter_body(plan.first, plan.stop, chunk_bytes=333))
    assert [spilled.item(i) for i in (0, 150, 299)] == [in_memory.item(i) for i in (0, 150, 299)]
    assert list(spilled.facts.lines) == list(in_memory.facts.lines)


def test_python_requests_spill_the_same_as_jsonl_lines() -> None:
    requests = make_requests(120)
    as_objects, _, _ = prepare(list(enumerate(requests, start=1)), spill=SpillFile, spill_above=SPILL_ABOVE)
    as_jsonl, _, _ = prepare_requests(_in_blocks(_jsonl(requests)), spill_above=SPILL_ABOVE)
    assert as_objects.spilled and as_jsonl.spilled
    assert [json.loads(as_objects.item(i)) for i in range(120)] == [json.loads(as_jsonl.item(i)) for i in range(120)]
    body = msgspec.json.decode(as_objects.body(0, 120))
    assert [r["custom_id"] for r in body["requests"]] == as_objects.custom_ids


def test_a_bad_input_is_named_as_in_memory_and_its_spill_file_removed() -> None:
    requests = make_requests(200)
    bad_request: Any = requests[150]
    bad_request["params"]["max_tokens"] = "many"
    data = _jsonl(requests)
    spilled, problems, bad = prepare_requests(_in_blocks(data), spill_above=SPILL_ABOVE)
    _, memory_problems, memory_bad = prepare_requests(_in_blocks(data), spill_above=len(data) * 10)
    assert (bad, [str(p) for p in problems]) == (memory_bad, [str(p) for p in memory_problems]) and bad == 1
    assert "line 151" in str(problems[0]) and not spilled.spilled  # closed: nothing will be sent


def test_a_subset_of_a_spilled_input_reads_its_items_back() -> None:
    spilled, _, _ = prepare_requests(_in_blocks(_jsonl(make_requests(100))), spill_above=SPILL_ABOVE)
    chosen = spilled.subset(["r-7", "r-93", "r-8"] if "r-7" in spilled.custom_ids else spilled.custom_ids[7:9])
    assert chosen.custom_ids == [cid for cid in spilled.custom_ids if cid in set(chosen.custom_ids)]
    assert [chosen.item(i) for i in range(len(chosen))] == [
        spilled.item(spilled.custom_ids.index(cid)) for cid in chosen.custom_ids
    ]


def test_prompt_caching_rewrites_a_spilled_input_into_a_spill_file_the_same_as_in_memory() -> None:
    instruction = "Label the review as positive, negative or neutral. " * 100
    requests = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "claude-sonnet-4-6",
                "max_tokens": 5,
                "system": instruction,
                "messages": [{"role": "user", "content": f"review {i}"}],
            },
        }
        for i in range(12)
    ]
    data = _jsonl(requests)
    in_memory, plan_in_memory = add_cache_breakpoints(prepare_requests(_in_blocks(data), spill_above=10**9)[0])
    source, _, _ = prepare_requests(_in_blocks(data), spill_above=SPILL_ABOVE)
    spilled, plan = add_cache_breakpoints(source)
    assert spilled.spilled and plan.changed == plan_in_memory.changed == 12
    assert _all_bytes(spilled) == bytes(in_memory.buffer) and spilled.fingerprint == in_memory.fingerprint
    sent = msgspec.json.decode(spilled.body(0, 12))["requests"]
    assert all(r["params"]["system"][0]["cache_control"] == CACHE_CONTROL for r in sent)


def test_the_spill_file_refuses_a_read_past_what_was_written() -> None:
    spill = SpillFile()
    try:
        spill.write(b"abc")
        spill.write(bytearray(b"def"))
        assert spill.read(2, 3) == b"cde"
        with pytest.raises(ValueError, match="not written"):
            spill.read(4, 5)
        assert os.fstat(spill._file.fileno()).st_nlink == 0  # no name: nothing left behind on a crash
    finally:
        spill.close()


def test_an_input_spills_once_it_holds_more_than_one_batch_of_requests_and_not_before() -> None:
    data = _jsonl(make_requests(300))
    one_batch, _, _ = prepare_requests(_in_blocks(data), spill_above_requests=300)
    more, _, _ = prepare_requests(_in_blocks(data), spill_above_requests=299)
    default, _, _ = prepare_requests(_in_blocks(data))
    assert not one_batch.spilled and not default.spilled and more.spilled
    assert _all_bytes(more) == bytes(one_batch.buffer) and more.fingerprint == one_batch.fingerprint
