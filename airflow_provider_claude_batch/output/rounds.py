"""Fold landed rounds into the final files: one row per input custom_id, with its round and attempts.

Each round was landed whole under `rounds/round-<n>/` (raw JSONL kept); this writes the top-level
`results.jsonl`, `failures.jsonl` (and CSV if asked) and a manifest that lists every round, all
staged and published with the manifest last, like a single landing.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.exceptions import ResultsMismatchError
from airflow_provider_claude_batch.output.land import (
    MANIFEST_VERSION,
    FileInfo,
    _iso,
    _Sink,
    _Staging,
    spreadsheet_safe,
)
from airflow_provider_claude_batch.results.fold import (
    EXAMPLES_KEPT,
    FAILED_TYPES,
    RESULT_TYPES,
    TABLE_COLUMNS,
    encode_row,
)
from airflow_provider_claude_batch.results.rounds import RoundsIndex
from airflow_provider_claude_batch.storage import binary_lines

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow.sdk import ObjectStoragePath

FINAL_COLUMNS = (*TABLE_COLUMNS, "round", "attempts")


def round_folder(output: ObjectStoragePath, round_number: int) -> ObjectStoragePath:
    return output / "rounds" / f"round-{round_number}"


def read_rows(path: ObjectStoragePath) -> Iterator[dict[str, Any]]:
    decoder = msgspec.json.Decoder()
    with path.open("rb") as handle:
        for line in binary_lines(handle):
            if line.strip():
                yield decoder.decode(line)


def finalize_rounds(
    output: ObjectStoragePath, manifests: Sequence[Mapping[str, Any]], formats: Sequence[str], now: float
) -> dict[str, Any]:
    """Write the final table and the manifest over every round; returns the manifest."""
    index = RoundsIndex()
    for number in range(1, len(manifests)):
        index.add_round(number, (row["custom_id"] for row in read_rows(round_folder(output, number) / "results.jsonl")))
    staging = _Staging(output)
    try:
        counts = dict.fromkeys(RESULT_TYPES, 0)
        error_types: dict[str, int] = {}
        results = _Sink(staging.file("results.jsonl"))
        failures = _Sink(staging.file("failures.jsonl"))
        table_csv = _Sink(staging.file("results.csv")) if "csv" in formats else None
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=FINAL_COLUMNS, lineterminator="\n")
        if table_csv is not None:
            writer.writeheader()
        for number in range(len(manifests)):
            for row in read_rows(round_folder(output, number) / "results.jsonl"):
                final = index.final_row(number, row)
                if final is None:
                    continue
                counts[final["result_type"]] = counts.get(final["result_type"], 0) + 1
                if final.get("error_type"):
                    error_types[final["error_type"]] = error_types.get(final["error_type"], 0) + 1
                encoded = encode_row(final)
                results.write(encoded)
                results.rows += 1
                if final["result_type"] in FAILED_TYPES:
                    failures.write(encoded)
                    failures.rows += 1
                if table_csv is not None:
                    writer.writerow({k: spreadsheet_safe(v) for k, v in final.items()})
                    table_csv.write(text.getvalue().encode())
                    text.seek(0)
                    text.truncate()
        if results.rows != manifests[0]["requests"]:
            raise ResultsMismatchError(
                f"The rounds fold into {results.rows} rows for {manifests[0]['requests']} requests (one per input "
                "custom_id expected); nothing was published.",
                [b["id"] for m in manifests for b in m["batches"]],
            )
        files = []
        for sink, name in ((results, "results.jsonl"), (failures, "failures.jsonl"), (table_csv, "results.csv")):
            if sink is not None:
                sink.close()
                files.append(FileInfo(name, sink.size, sink.hash.hexdigest(), sink.rows))
        manifest = _manifest(output, manifests, counts, error_types, files, results.rows, now)
        staging.publish([f.name for f in files], msgspec.json.format(msgspec.json.encode(manifest), indent=2))
        return manifest
    finally:
        staging.cleanup()


def _manifest(
    output: ObjectStoragePath,
    manifests: Sequence[Mapping[str, Any]],
    counts: dict[str, int],
    error_types: dict[str, int],
    files: list[FileInfo],
    requests: int,
    now: float,
) -> dict[str, Any]:
    failed = sum(counts[t] for t in FAILED_TYPES)
    batch_usd = sum(m["cost"]["batch_usd"] for m in manifests)
    standard_usd = sum(m["cost"]["standard_usd"] for m in manifests)
    usage_total: dict[str, int] = {}
    for m in manifests:
        for name, value in m["usage_total"].items():
            usage_total[name] = usage_total.get(name, 0) + value
    first_cost = manifests[0]["cost"]
    return {
        "manifest_version": MANIFEST_VERSION,
        "written_at": _iso(now),
        "output_path": str(output),
        "rounds": [
            {
                "round": number,
                "folder": f"rounds/round-{number}",
                "batch_ids": [b["id"] for b in m["batches"]],
                "requests": m["requests"],
                "counts": m["counts"],
                "cost": m["cost"],
            }
            for number, m in enumerate(manifests)
        ],
        "batches": [b for m in manifests for b in m["batches"]],
        "requests": requests,
        "counts": counts,
        "failed": failed,
        "failed_fraction": round(failed / requests, 6) if requests else 0.0,
        "error_types": error_types,
        "usage_total": usage_total,
        "cost_complete": all(m.get("cost_complete", True) for m in manifests),
        "result_problems": _merged_problems(manifests),
        "cost": {
            "batch_usd": round(batch_usd, 6),
            "standard_usd": round(standard_usd, 6),
            "savings_usd": round(standard_usd - batch_usd, 6),
            "unpriced_models": sorted({u for m in manifests for u in m["cost"]["unpriced_models"]}),
            "prices_as_of": first_cost["prices_as_of"],
            "prices_source": first_cost["prices_source"],
        },
        "files": [vars(f) for f in files],
    }


def _merged_problems(manifests: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for m in manifests:
        for kind, found in m.get("result_problems", {}).items():
            into = merged.setdefault(kind, {"results": 0, "examples": []})
            into["results"] += found["results"]
            into["examples"] = (into["examples"] + found["examples"])[:EXAMPLES_KEPT]
    return merged
