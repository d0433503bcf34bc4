"""Read the submit operator's input, in whichever form it came, as numbered entries.

Files are streamed from object storage (a JSONL file in 1 MB blocks, which `iter_jsonl_blocks` splits
into lines), so a large input is never held as text; the numbers are the file's line numbers, which is
what error messages name.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.batch.requests import (
    ParamsBuilder,
    iter_jsonl_blocks,
    read_blocks,
    rows_to_requests,
    template_params_builder,
)
from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.storage import as_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from airflow.sdk import ObjectStoragePath

def numbered(items: Iterable[object]) -> Iterator[tuple[int, object]]:
    return ((number, item) for number, item in enumerate(items, start=1))


def jsonl_blocks(path: ObjectStoragePath) -> Iterator[bytes]:
    """The file's bytes in 1 MB blocks, which `iter_jsonl_blocks` splits into lines."""
    try:
        with path.open("rb") as handle:
            yield from read_blocks(handle)
    except FileNotFoundError:
        raise BatchInputError(f"Input file {path} does not exist; nothing was submitted.") from None


def csv_rows(path: ObjectStoragePath) -> Iterator[tuple[int, object]]:
    try:
        with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
            reader = csv.DictReader(text)
            for row in reader:
                yield reader.line_num, row
    except FileNotFoundError:
        raise BatchInputError(f"Input file {path} does not exist; nothing was submitted.") from None


def request_entries(*, requests: Iterable[object] | None, requests_path: Any, rows: Iterable[object] | None,
                    rows_path: Any, rows_format: str | None, custom_id_column: str,
                    params_template: Mapping[str, Any] | None,
                    build_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None,
                    storage_conn_id: str | None) -> Iterable[tuple[int, object]]:
    """Numbered request dicts from exactly one of the four input forms (a JSONL file's come as its
    bytes, which `prepare_requests` checks without decoding them to dicts)."""
    given = [name for name, value in (("requests", requests), ("requests_path", requests_path),
                                      ("rows", rows), ("rows_path", rows_path)) if value is not None]
    if len(given) != 1:
        raise BatchInputError(
            f"Give exactly one of requests, requests_path, rows or rows_path (got {given or 'none'}).")
    if requests is not None:
        return numbered(requests)
    if requests_path is not None:
        return iter_jsonl_blocks(jsonl_blocks(as_path(requests_path, storage_conn_id)))
    builder = _params_builder(params_template, build_params)
    if rows is not None:
        return rows_to_requests(numbered(rows), custom_id_column=custom_id_column, build_params=builder)
    path = as_path(rows_path, storage_conn_id)
    kind = (rows_format or path.suffix.lstrip(".")).lower()
    source: Iterable[tuple[int, object]]
    if kind == "csv":
        source = csv_rows(path)
    elif kind in ("jsonl", "ndjson", "json"):
        source = iter_jsonl_blocks(jsonl_blocks(path))
    else:
        raise BatchInputError(f"Cannot tell the format of {path}; pass rows_format='jsonl' or 'csv'.")
    return rows_to_requests(source, custom_id_column=custom_id_column, build_params=builder)


def _params_builder(template: Mapping[str, Any] | None,
                    build: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None) -> ParamsBuilder:
    if (template is None) == (build is None):
        raise BatchInputError("Rows need exactly one of params_template or build_params to become requests.")
    return build if build is not None else template_params_builder(template or {})
