"""The duplicate custom_id check gives the same answers in memory and in its temporary database."""

from __future__ import annotations

import pytest

from airflow_provider_claude_batch.requests.seen import SeenIds


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_block_is_added_only_when_all_its_custom_ids_are_new_and_distinct(on_disk: bool) -> None:
    seen = SeenIds()
    assert seen.fresh(["a", "b"])
    if on_disk:
        seen.move_to_disk()
    assert seen.on_disk is on_disk
    assert "a" in seen and "c" not in seen
    assert not seen.fresh(["c", "a"])  # seen before: nothing of the block is kept
    assert "c" not in seen
    assert not seen.fresh(["d", "e", "d"])  # repeated within the block
    assert "d" not in seen and "e" not in seen
    assert seen.fresh(["c", "d"]) and "c" in seen and "d" in seen
    seen.add("f")
    seen.add("f")
    assert "f" in seen
    seen.close()
    assert "a" not in seen


def test_prepare_names_a_duplicate_across_batches_once_the_check_is_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_claude_batch.input.jsonl import iter_jsonl_blocks
    from airflow_provider_claude_batch.requests import prepared as prepared_module
    from airflow_provider_claude_batch.requests.prepare import prepare
    from airflow_provider_claude_batch.requests.spill import SpillFile

    monkeypatch.setattr(prepared_module, "_SPILL_CHUNK_BYTES", 2_000)
    on_disk: list[bool] = []
    checked = SeenIds.__contains__
    monkeypatch.setattr(SeenIds, "__contains__", lambda self, c: on_disk.append(self.on_disk) or checked(self, c))
    line = (
        '{"custom_id":"r-%d","params":{"model":"claude-haiku-4-5","max_tokens":5,'
        '"messages":[{"role":"user","content":"hi"}]}}'
    )
    lines = [line % n for n in range(300)] + [line % 7] + [line % n for n in range(300, 310)]
    blocks = ["\n".join(lines[k : k + 40]).encode() + b"\n" for k in range(0, len(lines), 40)]
    _, problems, bad = prepare(iter_jsonl_blocks(blocks), spill=SpillFile, spill_above_requests=50)
    assert bad == 1 and len(problems) == 1 and on_disk and all(on_disk)
    assert str(problems[0]) == "line 301 (custom_id 'r-7'): duplicate custom_id (first seen on line 8)"
