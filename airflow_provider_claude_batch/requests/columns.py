"""Per-request columns that move to local files once an input outgrows one batch: the item offsets,
custom_ids and preflight facts of 10,000,000 requests would otherwise hold hundreds of megabytes.

In memory, a column is an `array`. Once `spill` is called (requests/prepared.py calls it when it
spills the items), everything appended is written to a `Spill` file a chunk at a time and only the
newest chunk stays in memory: reading an entry is then an `os.pread`, reading in order a chunk at a
time. Pure: the file comes from the factory given to `spill`.
"""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from airflow_provider_claude_batch.requests.prepared import Spill

_TAIL_BYTES = 1 << 18  # once spilled, a column writes its tail out when it reaches this many bytes
_READ_ENTRIES = 1 << 15  # entries read at a time when a spilled column is iterated

T = TypeVar("T")


class _Ordered(Sequence[T]):
    """What the columns share: entries read one at a time (`_one`) or a range at a time (`read`), in order."""

    def _one(self, index: int) -> T:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> Sequence[T]:
        """Entries [start, stop)."""
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...
    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("a column is sliced in order, without a step")
            return self.read(start, stop)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range ({len(self)} entries)")
        return self._one(index)

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[Sequence[T]]:
        """Entries [start, stop) a chunk at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, _READ_ENTRIES):
            yield self.read(first, min(stop, first + _READ_ENTRIES))

    def __iter__(self) -> Iterator[T]:
        for chunk in self.chunks():
            yield from chunk

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Ordered | array | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    # Mutable, compared by value: not hashable.
    __hash__ = None  # type: ignore[assignment]


class IntColumn(_Ordered[int]):
    """Non-negative ints appended in order (an `array` of `typecode`), spillable to a file."""

    def __init__(self, typecode: str = "Q") -> None:
        self.typecode = typecode
        self._tail: array[int] = array(typecode)
        self._file: Spill | None = None
        self._on_file = 0  # entries in the file: the tail's first entry is this one
        self._tail_entries = _TAIL_BYTES // self._tail.itemsize

    def __len__(self) -> int:
        return self._on_file + len(self._tail)

    @property
    def spilled(self) -> bool:
        """Whether all but the newest entries are in a file."""
        return self._file is not None

    def spill(self, open_file: Callable[[], Spill]) -> None:
        """From now on keep only the newest entries in memory (the rest in the file `open_file` opens)."""
        if self._file is None:
            self._file = open_file()
            weakref.finalize(self, self._file.close)
            self._flush()

    def append(self, value: int) -> None:
        """Add one entry."""
        self._tail.append(value)
        if self._file is not None and len(self._tail) >= self._tail_entries:
            self._flush()

    def extend(self, values: Iterable[int]) -> None:
        """Add entries in order."""
        self._tail.extend(values)
        if self._file is not None and len(self._tail) >= self._tail_entries:
            self._flush()

    def _flush(self) -> None:
        if self._file is not None and self._tail:
            self._file.write(self._tail.tobytes())
            self._on_file += len(self._tail)
            self._tail = array(self.typecode)

    def _one(self, index: int) -> int:
        if index >= self._on_file:
            return self._tail[index - self._on_file]
        return self.read(index, index + 1)[0]

    def read(self, start: int, stop: int) -> array[int]:
        """Entries [start, stop) as an array (a copy)."""
        stop = max(start, stop)
        if start >= self._on_file or self._file is None:
            return self._tail[start - self._on_file : stop - self._on_file]
        size = self._tail.itemsize
        values: array[int] = array(self.typecode)
        values.frombytes(self._file.read(start * size, (min(stop, self._on_file) - start) * size))
        if stop > self._on_file:
            values.extend(self._tail[: stop - self._on_file])
        return values

    def __iter__(self) -> Iterator[int]:
        return iter(self._tail) if self._file is None else super().__iter__()


class StartsView(_Ordered[int]):
    """The items' start offsets, derived from their ends: items are separated by exactly one comma."""

    def __init__(self, ends: IntColumn) -> None:
        self._ends = ends

    def __len__(self) -> int:
        return len(self._ends)

    def _one(self, index: int) -> int:
        return 0 if index == 0 else self._ends[index - 1] + 1

    def read(self, start: int, stop: int) -> list[int]:
        """Starts [start, stop)."""
        if stop <= start:
            return []
        before = [-1] if start == 0 else []  # (the first item starts at 0: one comma after "-1")
        return [end + 1 for end in (*before, *self._ends.read(max(0, start - 1), stop - 1))]


class IdColumn(_Ordered[str]):
    """custom_ids in order: their text in one blob (ASCII: the schema allows only letters, digits, `_`
    and `-`) and their end offsets, spillable like an `IntColumn` (about 20 bytes each in memory before).
    """

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = IntColumn("Q")
        self._file: Spill | None = None
        self._on_file = 0  # bytes of text in the file: the blob starts at this offset

    def __len__(self) -> int:
        return len(self._ends)

    def spill(self, open_file: Callable[[], Spill]) -> None:
        """From now on keep only the newest custom_ids in memory."""
        if self._file is None:
            self._file = open_file()
            weakref.finalize(self, self._file.close)
            self._ends.spill(open_file)
            self._flush()

    def _size(self) -> int:
        return self._on_file + len(self._blob)

    def append(self, custom_id: str) -> None:
        """Add one custom_id."""
        self._blob += custom_id.encode("ascii")
        self._ends.append(self._size())
        self._settle()

    def extend(self, custom_ids: list[str]) -> None:
        """Add custom_ids in order."""
        base = self._size()
        self._blob += "".join(custom_ids).encode("ascii")
        ends = accumulate(map(len, custom_ids), initial=base)
        next(ends)  # (`base` itself: the previous custom_id's end)
        self._ends.extend(ends)
        self._settle()

    def _settle(self) -> None:
        if self._file is not None and len(self._blob) >= _TAIL_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._file is not None and self._blob:
            self._file.write(self._blob)
            self._on_file += len(self._blob)
            self._blob = bytearray()

    def _text(self, start: int, stop: int) -> bytes:
        if self._file is None or start >= self._on_file:
            return bytes(self._blob[start - self._on_file : stop - self._on_file])
        head = self._file.read(start, min(stop, self._on_file) - start)
        return head if stop <= self._on_file else head + bytes(self._blob[: stop - self._on_file])

    def _one(self, index: int) -> str:
        start = self._ends[index - 1] if index else 0
        return self._text(start, self._ends[index]).decode("ascii")

    def read(self, start: int, stop: int) -> list[str]:
        """custom_ids [start, stop) as a list."""
        if stop <= start:
            return []
        ends = self._ends.read(start, stop)
        first = self._ends[start - 1] if start else 0
        text = self._text(first, ends[-1]).decode("ascii")
        return [text[a - first : b - first] for a, b in zip((first, *ends[:-1]), ends, strict=True)]

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """Where custom_id `value` is (a scan, a chunk at a time: for the few problems shown)."""
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, _READ_ENTRIES):
            chunk = self.read(first, min(stop, first + _READ_ENTRIES))
            if value in chunk:
                return first + chunk.index(value)
        raise ValueError(f"{value!r} is not among the custom_ids")

    def view(self, start: int, stop: int) -> IdRange:
        """custom_ids [start, stop), read when iterated (one batch's, without holding them all)."""
        return IdRange(self, start, stop)


class IdRange(_Ordered[str]):
    """A range of an `IdColumn`, read when iterated or indexed."""

    def __init__(self, column: IdColumn, start: int, stop: int) -> None:
        self._column, self._start, self._stop = column, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def _one(self, index: int) -> str:
        return self._column[self._start + index]

    def read(self, start: int, stop: int) -> list[str]:
        """custom_ids [start, stop) of the range."""
        return self._column.read(self._start + start, self._start + min(stop, len(self)))
