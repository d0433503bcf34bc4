"""A JSONL input's lines, numbered and decoded, from blocks of bytes cut anywhere: pure (input/read.py reads files).

Given to `prepare`, a `JsonlEntries` is not decoded line by line: the preparer takes its bytes (a
block of complete lines at a time) and decodes only the lines it cannot send as written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from airflow_provider_claude_batch.requests.prepare import Problem
from airflow_provider_claude_batch.requests.schema import undecodable_reason

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

_decoder = msgspec.json.Decoder()


class JsonlEntries:
    """A JSONL input: a file's bytes in blocks split anywhere, or its lines.

    Iterated: the numbered decoded lines, blank ones skipped, a bad one a Problem. Given to
    `prepare` (a `JsonlSource`): the same requests, checked with less Python per line.
    """

    def __init__(self, source: Iterable[bytes], *, in_blocks: bool) -> None:
        self._source = source
        self._in_blocks = in_blocks

    def blocks(self) -> Iterator[bytes] | None:
        """For blocks: the complete lines of each block, as one piece without its last newline."""
        return block_parts(self._source) if self._in_blocks else None

    def lines(self) -> Iterable[bytes]:
        """The lines as given, when the input came as lines."""
        return self._source

    def __iter__(self) -> Iterator[tuple[int, object]]:
        parts = self.blocks()
        groups = (part.split(b"\n") for part in parts) if parts is not None else (self._source,)
        number = 0
        for lines in groups:
            for line in lines:
                number += 1
                if line.strip():
                    yield number, decode_line(number, line)


def iter_jsonl_blocks(blocks: Iterable[bytes]) -> JsonlEntries:
    """A JSONL input given as a file's bytes in blocks split anywhere (not at line ends)."""
    return JsonlEntries(blocks, in_blocks=True)


def iter_jsonl_lines(lines: Iterable[bytes]) -> JsonlEntries:
    """A JSONL input given as its lines (each with or without its newline)."""
    return JsonlEntries(lines, in_blocks=False)


def block_parts(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """Each block's complete lines, joined by their newlines (the last one's left off).

    The last line of the input may end without one.
    """
    pending: list[bytes] = []  # the start of a line that has not ended yet (one line may span blocks)
    for block in blocks:
        cut = block.rfind(b"\n")
        if cut < 0:
            pending.append(block)
            continue
        yield b"".join([*pending, memoryview(block)[:cut]]) if pending else block[:cut]  # one copy, not two
        pending = [block[cut + 1 :]]
    if any(pending):
        yield b"".join(pending)


def decode_line(number: int, line: bytes) -> object:
    """A line's JSON value, or the Problem that says why it has none."""
    try:
        return _decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:  # invalid UTF-8 is the second
        return Problem(number, None, undecodable_reason(line, exc))
