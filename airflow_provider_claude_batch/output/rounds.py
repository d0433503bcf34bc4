"""Fold landed rounds into the final files: one row per input custom_id, with its round and attempts.

Each round was landed whole under `rounds/round-<n>/` (raw JSONL kept); this writes the top-level
`results.jsonl`, `failures.jsonl` (and CSV if asked) and a manifest that lists every round, all
staged and published with the manifest last, like a single landing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.exceptions import ResultsMismatchError
from airflow_provider_claude_batch.output.manifest import (
    build_manifest,
    manifest_bytes,
    round_entry,
    round_route,
    rounds_summary,
    route_totals,
    with_route_costs,
)
from airflow_provider_claude_batch.output.staging import Staging
from airflow_provider_claude_batch.output.tables import CsvTable, close_published
from airflow_provider_claude_batch.results.fold import TABLE_COLUMNS, encode_row
from airflow_provider_claude_batch.results.rounds import RoundsIndex
from airflow_provider_claude_batch.results.totals import FAILED_TYPES, INVALID_OUTPUT, RESULT_TYPES
from airflow_provider_claude_batch.storage import binary_lines

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.output.manifest import Json
    from airflow_provider_claude_batch.output.staging import Sink

FINAL_COLUMNS = (*TABLE_COLUMNS, "round", "attempts", "route")


def round_folder(output: ObjectStoragePath, round_number: int) -> ObjectStoragePath:
    """Where round `round_number` is landed whole, below the final files."""
    return output / "rounds" / f"round-{round_number}"


def read_rows(path: ObjectStoragePath) -> Iterator[dict[str, Any]]:
    """The rows of a landed JSONL table, one at a time."""
    decoder = msgspec.json.Decoder()
    with path.open("rb") as handle:
        for line in binary_lines(handle):
            if line.strip():
                yield decoder.decode(line)


def finalize_rounds(
    output: ObjectStoragePath,
    manifests: Sequence[Mapping[str, Any]],
    formats: Sequence[str],
    now: float,
    estimate: Mapping[str, Any] | None = None,
    *,
    deadline: Json | None = None,
) -> Json:
    """Write the final table and the manifest over every round (with preflight's `estimate` beside the
    cost across rounds, and with `deadline`: what the guard did); returns the manifest.
    """
    index = RoundsIndex()
    for number in range(1, len(manifests)):
        index.add_round(number, (row["custom_id"] for row in read_rows(round_folder(output, number) / "results.jsonl")))
    staging = Staging(output)
    structured = manifests[0].get("structured_output")
    try:
        final = _FinalTables(staging, "csv" in formats, tuple(structured["columns"]) if structured else ())
        for number, round_manifest in enumerate(manifests):
            route = round_route(round_manifest)
            for row in read_rows(round_folder(output, number) / "results.jsonl"):
                final_row = index.final_row(number, row)
                if final_row is not None:
                    final_row["route"] = route
                    final.add(final_row)
        requests = final.results.rows
        if requests != manifests[0]["requests"]:
            raise ResultsMismatchError(
                f"The rounds fold into {requests} rows for {manifests[0]['requests']} requests (one per input "
                "custom_id expected); nothing was published.",
                [b["id"] for m in manifests for b in m["batches"]],
            )
        files = close_published(final.sinks)
        summary = rounds_summary(
            manifests, requests, final.counts, final.error_types, _final_structured(structured, final)
        )
        manifest = build_manifest(
            str(output),
            now,
            [b for m in manifests for b in m["batches"]],
            with_route_costs(summary, manifests),
            files,
            rounds=[round_entry(number, m) | {"route": round_route(m)} for number, m in enumerate(manifests)],
            estimate=estimate,
        )
        manifest["routes"] = route_totals(manifests, final.route_counts)
        if deadline is not None:
            manifest["deadline"] = deadline
        staging.publish([f.name for f in files], manifest_bytes(manifest))
        return manifest
    finally:
        staging.cleanup()


def _final_structured(structured: Json | None, final: _FinalTables) -> Json | None:
    """The output_type's manifest entry with the final rows' verdicts (None without an output_type)."""
    if structured is None:
        return None
    invalid = final.error_types.get(INVALID_OUTPUT, 0)
    return {**structured, "validated": final.counts.get("succeeded", 0) - invalid, "invalid_output": invalid}


class _FinalTables:
    """The final results, failures and (if asked) CSV, and the counts of the rows written."""

    def __init__(self, staging: Staging, with_csv: bool, output_columns: tuple[str, ...] = ()) -> None:
        self.results = staging.sink("results.jsonl")
        self.failures = staging.sink("failures.jsonl")
        # An output_type's columns come after the table's own, before round and attempts.
        self.columns = (*TABLE_COLUMNS, *output_columns, "round", "attempts")
        self.csv = CsvTable(staging.sink("results.csv"), self.columns) if with_csv else None
        self.counts = dict.fromkeys(RESULT_TYPES, 0)
        self.error_types: dict[str, int] = {}
        self.route_counts: dict[str, dict[str, int]] = {}

    @property
    def sinks(self) -> list[Sink]:
        """The staged files, in the manifest's order."""
        return [self.results, self.failures] + ([self.csv.sink] if self.csv is not None else [])

    def add(self, row: dict[str, Any]) -> None:
        """Write one final row to every file it belongs in, and count it."""
        kind = row["result_type"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        by_route = self.route_counts.setdefault(row["route"], dict.fromkeys(RESULT_TYPES, 0))
        by_route[kind] = by_route.get(kind, 0) + 1
        if row.get("error_type"):
            self.error_types[row["error_type"]] = self.error_types.get(row["error_type"], 0) + 1
        encoded = encode_row(row)
        self.results.write_rows(encoded, 1)
        if kind in FAILED_TYPES or row.get("error_type") == INVALID_OUTPUT:
            self.failures.write_rows(encoded, 1)
        if self.csv is not None:
            self.csv.add([[row.get(column) for column in self.columns]], 1)
