"""The table files of a landing: JSONL, spreadsheet-safe CSV and Parquet, plus the failures.

Rows arrive in blocks (hundreds of results at a time) and each file gets one write per block.
pyarrow is imported only when Parquet is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec.structs import astuple

from airflow_provider_claude_batch.output.manifest import FileInfo
from airflow_provider_claude_batch.results.fold import TABLE_COLUMNS, TableRow, encode_rows

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from airflow_provider_claude_batch.output.staging import Sink, SinkMark, Staging

# A cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PARQUET_ROW_GROUP = 10_000
TEXT_COLUMNS = frozenset(
    {
        "custom_id",
        "batch_id",
        "result_type",
        "text",
        "stop_reason",
        "model",
        "message_id",
        "service_tier",
        "error_type",
        "error_message",
    }
)


def spreadsheet_safe(value: object) -> object:
    """A text cell a spreadsheet would run as a formula, prefixed with a single quote (shown as text)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_safe_row(values: Iterable[object]) -> list[object]:
    """A row's cells, each made spreadsheet-safe."""
    return [spreadsheet_safe(v) for v in values]


class CsvTable:
    """A CSV file of rows under a header, every cell spreadsheet-safe, written a block at a time."""

    def __init__(self, sink: Sink, columns: Sequence[str]) -> None:
        self.sink = sink
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\n")
        sink.write((",".join(columns) + "\n").encode())

    def add(self, rows: Iterable[Iterable[object]], count: int) -> None:
        """Write `count` rows, each its cells in column order."""
        self._writer.writerows(map(spreadsheet_safe_row, rows))
        self.sink.write_rows(self._text.getvalue().encode(), count)
        self._text.seek(0)
        self._text.truncate()


class Tables:
    """The files every batch adds rows to, written as results are parsed: the table (JSONL, CSV) and
    the failures. Batches are landed one after another, so each file is the batches' rows in order.
    """

    def __init__(self, staging: Staging, formats: Sequence[str], columns: Sequence[str] = TABLE_COLUMNS) -> None:
        # The JSONL table is also what Parquet is built from, so it is staged for either format.
        self.jsonl = (
            staging.sink("results.jsonl", published="jsonl" in formats)
            if "jsonl" in formats or "parquet" in formats
            else None
        )
        self.failures = staging.sink("failures.jsonl")
        self.csv = CsvTable(staging.sink("results.csv"), columns) if "csv" in formats else None

    @property
    def sinks(self) -> list[Sink]:
        """The staged files, in the manifest's order."""
        csv_sink = self.csv.sink if self.csv is not None else None
        return [sink for sink in (self.jsonl, self.failures, csv_sink) if sink is not None]

    def add(self, rows: list[TableRow], failed: list[TableRow]) -> None:
        """One write per file and block of results (hundreds of rows), not one per result."""
        if self.jsonl is not None:
            self.jsonl.write_rows(encode_rows(rows), len(rows))
        if failed:
            self.failures.write_rows(encode_rows(failed), len(failed))
        if self.csv is not None:
            self.csv.add(map(astuple, rows), len(rows))

    def mark(self) -> list[SinkMark]:
        """Where every file is now, to roll back to."""
        return [sink.mark() for sink in self.sinks]

    def rollback(self, marks: list[SinkMark]) -> None:
        """Take back every row written since `marks`."""
        for sink, mark in zip(self.sinks, marks, strict=True):
            sink.rollback(mark)

    def close(self) -> list[FileInfo]:
        """Sync and describe the files to publish, in the manifest's order."""
        return close_published(self.sinks)

    def abandon(self) -> None:
        """Close every file unsynced: nothing of them is published."""
        for sink in self.sinks:
            sink.handle.close()


def close_published(sinks: Iterable[Sink]) -> list[FileInfo]:
    """Close every file, and describe the published ones for the manifest, in order."""
    files = []
    for sink in sinks:
        sink.close()
        if sink.published:
            files.append(sink.info())
    return files


def write_parquet(
    staging: Staging, rows_per_batch: Sequence[int], output_columns: Mapping[str, str] | None = None
) -> FileInfo:
    """Built from the staged JSONL table (written whether or not JSONL is published); row groups of
    PARQUET_ROW_GROUP rows, restarted at each batch. `output_columns` (an output_type's fields and
    their kinds: integer, number, boolean, string, json) follow the table's own, typed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}
    schema = pa.schema(
        [(c, pa.string() if c in TEXT_COLUMNS else pa.int64()) for c in TABLE_COLUMNS]
        + [(c, kinds.get(kind, pa.string())) for c, kind in (output_columns or {}).items()]
    )
    path = staging.file("results.parquet")
    rows = 0
    decoder = msgspec.json.Decoder()
    with pq.ParquetWriter(path, schema) as writer, open(staging.file("results.jsonl"), "rb") as source:
        for count in rows_per_batch:
            chunk: list[dict[str, Any]] = []
            for line in itertools.islice(source, count):
                chunk.append(decoder.decode(line))
                if len(chunk) == PARQUET_ROW_GROUP:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    rows += len(chunk)
                    chunk = []
            if chunk:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                rows += len(chunk)
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return FileInfo("results.parquet", os.path.getsize(path), digest.hexdigest(), rows)
