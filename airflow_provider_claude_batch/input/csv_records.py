"""A CSV file's rows, read strictly from its binary lines: pure (input/read.py opens the file).

A row that does not parse (an unterminated quote would swallow the rows after it into one prompt),
has more or fewer fields than the header, or is not UTF-8 is a problem named by its line, so a
malformed file is refused before anything is paid for rather than sent as something else.
"""

from __future__ import annotations

import csv
from collections import Counter
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES
from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.input.text import without_bom
from airflow_provider_claude_batch.requests.prepare import Problem
from airflow_provider_claude_batch.requests.schema import not_utf8_reason

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


def csv_records(lines: Iterable[bytes], *, custom_id_column: str, source: object) -> Iterator[tuple[int, object]]:
    """A CSV file's rows (given as its binary lines) as `(line, {column: value})`.

    Rows are numbered by the line each starts on; a row that cannot be read as the header says is a
    `Problem` for that line. Quoted values may hold commas, quotes ("") and line breaks (so a row
    may span lines); blank lines are skipped. A header that repeats or leaves out a column name, or
    lacks `custom_id_column`, is refused outright: no row could be read by it.
    """
    _allow_long_values()
    text = _Utf8Lines(lines, source)
    reader = csv.reader(text, strict=True)
    header: list[str] | None = None
    start = 1  # the line the next row starts on
    while True:
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:  # the reader starts afresh on the next line
            fields, error = [], _csv_reason(exc)
        first, start = start, text.number + 1
        not_utf8 = text.pop_not_utf8()
        if header is None:
            reason = error or (not_utf8 and not_utf8[1])
            if reason:
                raise BatchInputError(f"{source} line {first} (the header): {reason}. Nothing was submitted.")
            if fields:
                header = _checked_header(fields, custom_id_column, f"{source} line {first} (the header)")
            continue
        if not_utf8 is not None:
            yield not_utf8[0], Problem(not_utf8[0], None, not_utf8[1])
        elif error is not None:
            yield first, Problem(first, None, error)
        elif len(fields) == len(header):
            yield first, dict(zip(header, fields, strict=True))
        elif fields:  # (an empty list is a blank line)
            yield first, Problem(first, None, _width_reason(fields, header))


class _Utf8Lines:
    """A binary file's lines as text for `csv.reader`, each decoded as strict UTF-8.

    A line that is not UTF-8 is remembered (and passed on with replacement characters, so the rows
    after it are still read and checked): the row holding it is refused.
    """

    def __init__(self, lines: Iterable[bytes], source: object) -> None:
        self._lines = iter(lines)
        self._source = source
        self._not_utf8: tuple[int, str] | None = None
        self.number = 0  # the line last read

    def __iter__(self) -> _Utf8Lines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.number += 1
        if self.number == 1:
            line = without_bom(line, self._source)
        try:
            return line.decode()
        except UnicodeDecodeError as exc:
            if self._not_utf8 is None:
                self._not_utf8 = (self.number, not_utf8_reason(line, exc))
            return line.decode(errors="replace")

    def pop_not_utf8(self) -> tuple[int, str] | None:
        """The first line that was not UTF-8 since the last call, and why."""
        found, self._not_utf8 = self._not_utf8, None
        return found


def _allow_long_values() -> None:
    """Csv refuses a value over 128 KB by default, and a long document in a prompt is ordinary.

    No request can be larger than a batch body. The limit is the process's, so it is only ever raised.
    """
    if csv.field_size_limit() < API_MAX_BODY_BYTES:
        csv.field_size_limit(API_MAX_BODY_BYTES)


def _csv_reason(exc: csv.Error) -> str:
    message = str(exc)
    if "unexpected end of data" in message:
        return "a quoted value that starts on this line is never closed (an unterminated quote)"
    if "expected after" in message:
        return 'text follows a closing quote (a quote inside a quoted value is written twice: "")'
    if "new-line character" in message:
        return "a line ends with a lone carriage return; save the file with LF or CRLF line ends"
    if "field larger than field limit" in message:
        return f"a value is over {csv.field_size_limit()} characters (an unterminated quote?)"
    return f"not valid CSV: {message}"


def _width_reason(fields: list[str], header: list[str]) -> str:
    if len(fields) < len(header):
        missing = ", ".join(repr(name) for name in header[len(fields) :][:5])
        return f"{len(fields)} field(s) where the header has {len(header)}: no value for {missing}"
    return (
        f'{len(fields)} fields where the header has {len(header)} (a value with a comma must be quoted, "like, this")'
    )


def _checked_header(names: list[str], custom_id_column: str, where: str) -> list[str]:
    unnamed = [position for position, name in enumerate(names, start=1) if not name.strip()]
    if unnamed:
        raise BatchInputError(
            f"{where}: column(s) {unnamed} have no name (a trailing comma?); every column "
            "needs one. Nothing was submitted."
        )
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise BatchInputError(
            f"{where}: the column name(s) {repeated} repeat; a row could not say which value "
            "is meant. Nothing was submitted."
        )
    if custom_id_column not in names:
        raise BatchInputError(
            f"{where}: no column {custom_id_column!r} (custom_id_column) among {names[:12]}. Nothing was submitted."
        )
    return names
