"""Read the submit operator's input, in whichever form it came, as numbered entries.

Files are streamed from object storage (a JSONL file in 1 MB blocks, which `iter_jsonl_blocks` splits
into lines; a CSV file line by line), so a large input is never held as text; the numbers are the
file's line numbers, which is what error messages name.

Reading is strict, so a malformed file is refused before anything is paid for rather than sent as
something else: a CSV row that does not parse (an unterminated quote would swallow the rows after
it into one prompt), has more or fewer fields than the header, or is not UTF-8 is a problem named
by its line; so is a JSONL line. A UTF-8 byte order mark at the start of a file is stripped (Excel's
"CSV UTF-8" writes one, and it is an encoding signature, not data); a UTF-16 or UTF-32 one is refused.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES
from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.requests.prepare import (
    ParamsBuilder,
    Problem,
    TemplateError,
    iter_jsonl_blocks,
    not_utf8_reason,
    read_blocks,
    rows_to_requests,
    template_params_builder,
)
from airflow_provider_claude_batch.storage import as_path, binary_lines

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow.sdk import ObjectStoragePath

UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16 (and UTF-32 LE): neither byte ever starts UTF-8 text


def numbered(items: Iterable[object]) -> Iterator[tuple[int, object]]:
    return ((number, item) for number, item in enumerate(items, start=1))


def without_bom(start: bytes, source: object) -> bytes:
    """A file's first bytes without a UTF-8 byte order mark; a UTF-16/32 file is refused by name."""
    if start.startswith(UTF8_BOM):
        return start[len(UTF8_BOM) :]
    if start.startswith(_WIDE_BOMS):
        raise BatchInputError(
            f"{source} is UTF-16 or UTF-32 text (it starts with that byte order mark); "
            "save it as UTF-8. Nothing was submitted."
        )
    return start


def jsonl_blocks(path: ObjectStoragePath) -> Iterator[bytes]:
    """The file's bytes in 1 MB blocks, which `iter_jsonl_blocks` splits into lines."""
    try:
        with path.open("rb") as handle:
            blocks = read_blocks(handle)
            first = next(blocks, b"")
            if first:
                yield without_bom(first, path)
            yield from blocks
    except FileNotFoundError:
        raise BatchInputError(f"Input file {path} does not exist; nothing was submitted.") from None


def csv_rows(path: ObjectStoragePath, custom_id_column: str) -> Iterator[tuple[int, object]]:
    try:
        with path.open("rb") as raw:
            yield from csv_records(binary_lines(raw), custom_id_column=custom_id_column, source=path)
    except FileNotFoundError:
        raise BatchInputError(f"Input file {path} does not exist; nothing was submitted.") from None


def csv_records(lines: Iterable[bytes], *, custom_id_column: str, source: object) -> Iterator[tuple[int, object]]:
    """A CSV file's rows (given as its binary lines) as `(line, {column: value})`, numbered by the line
    each row starts on; a row that cannot be read as the header says is a `Problem` for that line.

    Quoted values may hold commas, quotes ("") and line breaks (so a row may span lines); blank lines
    are skipped. A header that repeats or leaves out a column name, or lacks `custom_id_column`, is
    refused outright: no row could be read by it.
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
    """A binary file's lines as text for `csv.reader`, each decoded as strict UTF-8. A line that is not
    UTF-8 is remembered (and passed on with replacement characters, so the rows after it are still
    read and checked): the row holding it is refused.
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
    """Csv refuses a value over 128 KB by default, and a long document in a prompt is ordinary; no request
    can be larger than a batch body. The limit is the process's, so it is only ever raised.
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


def request_entries(
    *,
    requests: Iterable[object] | None,
    requests_path: Any,
    rows: Iterable[object] | None,
    rows_path: Any,
    rows_format: str | None,
    custom_id_column: str,
    params_template: Mapping[str, Any] | None,
    build_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None,
    storage_conn_id: str | None,
) -> Iterable[tuple[int, object]]:
    """Numbered request dicts from exactly one of the four input forms (a JSONL file's come as its
    bytes, which `prepare_requests` checks without decoding them to dicts).
    """
    given = [
        name
        for name, value in (
            ("requests", requests),
            ("requests_path", requests_path),
            ("rows", rows),
            ("rows_path", rows_path),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise BatchInputError(
            f"Give exactly one of requests, requests_path, rows or rows_path (got {given or 'none'})."
        )
    if requests is not None:
        return numbered(_listed("requests", requests))
    if requests_path is not None:
        return iter_jsonl_blocks(jsonl_blocks(as_path(requests_path, storage_conn_id)))
    builder = _params_builder(params_template, build_params)
    if rows is not None:
        return rows_to_requests(
            numbered(_listed("rows", rows)), custom_id_column=custom_id_column, build_params=builder
        )
    path = as_path(rows_path, storage_conn_id)
    kind = (rows_format or path.suffix.lstrip(".")).lower()
    source: Iterable[tuple[int, object]]
    if kind == "csv":
        source = csv_rows(path, custom_id_column)
    elif kind in ("jsonl", "ndjson", "json"):
        source = iter_jsonl_blocks(jsonl_blocks(path))
    else:
        raise BatchInputError(f"Cannot tell the format of {path}; pass rows_format='jsonl' or 'csv'.")
    return rows_to_requests(source, custom_id_column=custom_id_column, build_params=builder)


def _listed(name: str, value: object) -> Iterable[object]:
    """`requests`/`rows` as given: a list (or other iterable) of items, not one item or a string."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise BatchInputError(
            f"{name} must be a list of {'requests' if name == 'requests' else 'rows'}, "
            f"got {type(value).__name__}. Nothing was submitted."
        )
    return value


def _params_builder(
    template: Mapping[str, Any] | None, build: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None
) -> ParamsBuilder:
    if (template is None) == (build is None):
        raise BatchInputError("Rows need exactly one of params_template or build_params to become requests.")
    if build is not None:
        return build
    try:
        return template_params_builder(template or {})
    except TemplateError as exc:
        raise BatchInputError(f"{exc}. Nothing was submitted.") from None
