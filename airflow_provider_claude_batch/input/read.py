"""The input stage's I/O shell: read the submit operator's input, in whichever form it came, as numbered entries.

Files are streamed from object storage (a JSONL file in 1 MB blocks, which `iter_jsonl_blocks` splits
into lines; a CSV file line by line), so a large input is never held as text; the numbers are the
file's line numbers, which is what error messages name. Parsing is pure and lives beside this
module (jsonl.py, csv_records.py, rows.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.input.csv_records import csv_records
from airflow_provider_claude_batch.input.jsonl import JsonlEntries, iter_jsonl_blocks, iter_jsonl_lines
from airflow_provider_claude_batch.input.rows import params_builder, rows_to_requests
from airflow_provider_claude_batch.input.text import without_bom
from airflow_provider_claude_batch.storage import as_path, binary_lines

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.input.rows import ParamsBuilder

READ_BYTES = 1 << 20  # a JSONL file is read in blocks this big


@runtime_checkable
class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def numbered(items: Iterable[object]) -> Iterator[tuple[int, object]]:
    """Items numbered from 1, as the lines error messages name."""
    return ((number, item) for number, item in enumerate(items, start=1))


def read_blocks(handle: _Readable) -> Iterator[bytes]:
    """A binary file's bytes in READ_BYTES blocks (split anywhere, not at line ends)."""
    return iter(functools.partial(handle.read, READ_BYTES), b"")


def iter_jsonl(source: Iterable[bytes]) -> JsonlEntries:
    """A JSONL input from an open binary file (read in blocks) or from its lines.

    Iterated, the numbered decoded lines (blank ones skipped, a bad line a Problem); given to
    `prepare_requests`, its bytes.
    """
    if isinstance(source, _Readable):
        return iter_jsonl_blocks(read_blocks(source))
    return iter_jsonl_lines(source)


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
    """The rows of a CSV file in object storage, numbered by their lines (`csv_records`)."""
    try:
        with path.open("rb") as raw:
            yield from csv_records(binary_lines(raw), custom_id_column=custom_id_column, source=path)
    except FileNotFoundError:
        raise BatchInputError(f"Input file {path} does not exist; nothing was submitted.") from None


def request_entries(
    *,
    requests: Iterable[object] | None,
    requests_path: str | os.PathLike[str] | ObjectStoragePath | None,
    rows: Iterable[object] | None,
    rows_path: str | os.PathLike[str] | ObjectStoragePath | None,
    rows_format: str | None,
    custom_id_column: str,
    params_template: Mapping[str, object] | None,
    build_params: ParamsBuilder | None,
    storage_conn_id: str | None,
) -> Iterable[tuple[int, object]]:
    """Numbered request dicts from exactly one of the four input forms.

    A JSONL file's come as its bytes, which `prepare_requests` checks without decoding them to dicts.
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
    builder = params_builder(params_template, build_params)
    if rows is not None:
        return rows_to_requests(
            numbered(_listed("rows", rows)), custom_id_column=custom_id_column, build_params=builder
        )
    if rows_path is None:  # (one of the four is given: checked above)
        raise BatchInputError("Give exactly one of requests, requests_path, rows or rows_path (got none).")
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
