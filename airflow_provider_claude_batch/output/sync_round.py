"""Land a round sent through the Messages API like a batch round: raw lines, tables, manifest last.

The answers are result lines shaped like a batch's (see `sync.decide`), so they are folded, counted
and priced by the batch code; the round's manifest says ``"route": "sync"`` and lists no batch, and its
dollars are the standard price (`cost.standard_usd`): the Messages API has no batch discount.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.output.land import output_check, structured_verdicts
from airflow_provider_claude_batch.output.manifest import build_manifest, landed_summary, manifest_bytes
from airflow_provider_claude_batch.output.staging import Staging
from airflow_provider_claude_batch.output.tables import Tables
from airflow_provider_claude_batch.results.fold import TABLE_COLUMNS, fold_lines
from airflow_provider_claude_batch.results.pricing import cost_of
from airflow_provider_claude_batch.results.totals import Totals

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.output.manifest import Json
    from airflow_provider_claude_batch.requests.structured import OutputSpec
    from airflow_provider_claude_batch.results.pricing import ModelPrice

SYNC_ROUTE = "sync"
BATCH_ROUTE = "batch"
RAW_MESSAGES = "raw/messages.jsonl"
# A sync row's batch_id: it came from no batch.
NO_BATCH = ""


def standard_cost_of_line(line: bytes, prices: Mapping[str, ModelPrice] | None = None) -> float | None:
    """What one answer line cost at the standard price (None: nothing billed, or its model is unpriced)."""
    totals = Totals()
    fold_lines(line, NO_BATCH, totals)
    if not totals.usage_by_model:
        return None
    cost = cost_of(totals.usage_by_model, prices) if prices else cost_of(totals.usage_by_model)
    return None if cost.unpriced_models else cost.standard_usd


def land_sync_round(
    folder: ObjectStoragePath,
    lines: Mapping[str, bytes],
    order: Sequence[str],
    *,
    within: ObjectStoragePath,
    prices: Mapping[str, ModelPrice] | None = None,
    output: OutputSpec | None = None,
) -> Json:
    """Publish the round's files under `folder` (one row per custom_id of `order`); returns its manifest.

    With `output` (an output_type's spec), each answer is validated and gets the typed columns, as in a
    batch round: the final table has the same shape whatever the route.
    """
    block = b"".join(lines[custom_id] for custom_id in order)
    totals = Totals()
    check = output_check(output)
    columns = TABLE_COLUMNS + (check.columns if check is not None else ())
    with _staged(folder, within, columns) as (staging, tables):
        raw = staging.sink(RAW_MESSAGES)
        raw.write_rows(block, len(order))
        raw.close()
        if block:
            folded = fold_lines(block, NO_BATCH, totals, check)
            tables.add(folded.rows, folded.failed)
        files = [raw.info(rows=len(order)), *tables.close()]
        summary = landed_summary(totals, prices, structured_verdicts(check, totals), standard_price=True)
        manifest = build_manifest(str(folder), time.time(), [], summary, files)
        manifest["route"] = SYNC_ROUTE
        staging.publish([f.name for f in files], manifest_bytes(manifest))
    return manifest


@contextmanager
def _staged(
    folder: ObjectStoragePath, within: ObjectStoragePath, columns: tuple[str, ...]
) -> Iterator[tuple[Staging, Tables]]:
    """The staging area and the JSONL tables; whatever was not published is dropped on the way out."""
    staging = Staging(folder, within)
    tables = None
    try:
        tables = Tables(staging, ("jsonl",), columns)
        yield staging, tables
    finally:
        if tables is not None:
            tables.abandon()
        staging.cleanup()
