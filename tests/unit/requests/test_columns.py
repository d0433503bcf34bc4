"""The per-request columns read the same in memory and spilled (requests/columns.py)."""

from __future__ import annotations

from array import array

import pytest

from airflow_provider_claude_batch.requests import columns
from airflow_provider_claude_batch.requests.columns import IdColumn, IntColumn, StartsView
from airflow_provider_claude_batch.requests.spill import SpillFile


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns, "_TAIL_BYTES", 64)  # a spilled column writes its tail out every 8 entries
    monkeypatch.setattr(columns, "_READ_ENTRIES", 5)


@pytest.mark.parametrize("spill_after", [None, 0, 3, 50])
def test_an_int_column_reads_the_same_in_memory_and_spilled(spill_after: int | None) -> None:
    column = IntColumn("Q")
    values = [i * 7 + (i % 3) for i in range(100)]
    for number, value in enumerate(values):
        if number == spill_after:
            column.spill(SpillFile)
        if number % 2:
            column.append(value)
        else:
            column.extend([value])
    assert column.spilled is (spill_after is not None)
    assert len(column) == 100 and list(column) == values and column == values
    assert [column[i] for i in range(100)] == values and column[-1] == values[-1]
    assert column[10:37] == array("Q", values[10:37]) and column[95:200] == array("Q", values[95:])
    assert [list(chunk) for chunk in column.chunks(3, 14)] == [values[3:8], values[8:13], values[13:14]]
    with pytest.raises(IndexError):
        column[100]


def test_a_spilled_column_keeps_only_its_newest_entries_in_memory() -> None:
    column = IntColumn("Q")
    column.spill(SpillFile)
    column.extend(range(10_000))
    assert len(column._tail) < 8 and len(column) == 10_000 and column[5_000] == 5_000


def test_starts_are_one_comma_after_the_previous_end() -> None:
    ends = IntColumn("Q")
    ends.extend([4, 9, 20])  # items [0, 4) [5, 9) [10, 20)
    starts = StartsView(ends)
    assert list(starts) == [0, 5, 10] and [starts[i] for i in range(3)] == [0, 5, 10] and len(starts) == 3
    assert list(StartsView(IntColumn())) == []


@pytest.mark.parametrize("spill_after", [None, 0, 4, 30])
def test_an_id_column_reads_the_same_in_memory_and_spilled(spill_after: int | None) -> None:
    ids = IdColumn()
    expected = [f"id-{n}" + "x" * (n % 5) for n in range(60)]
    for number in range(0, 60, 3):
        if spill_after is not None and number >= spill_after and ids._file is None:
            ids.spill(SpillFile)
        ids.extend(expected[number : number + 2])
        ids.append(expected[number + 2])
    assert len(ids) == 60 and list(ids) == expected and ids == expected
    assert [ids[i] for i in range(60)] == expected and ids[-1] == expected[-1]
    assert ids[7:33] == expected[7:33] and ids[59:80] == expected[59:] and ids[5:5] == []
    assert ids.index("id-42xx") == 42
    view = ids.view(10, 25)
    assert len(view) == 15 and list(view) == expected[10:25] and view[0] == expected[10] and view[-1] == expected[24]
    with pytest.raises(ValueError, match="not among"):
        ids.index("nope")
