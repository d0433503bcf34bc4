"""Land ended batches' results in object storage: one streaming pass per batch, files that are
complete or absent, and `_manifest.json` written last as the commit marker.

The shell of the output stage: it asks the hook for the batches and their streams, folds them
(`results/`) into the staged tables (`tables.py`, `staging.py`) and publishes them with the manifest
(`manifest.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.exceptions import (
    BatchInFlightError,
    BatchInputError,
    ClaudeBatchError,
    ResultsMismatchError,
)
from airflow_provider_claude_batch.output.kept import KeptResults
from airflow_provider_claude_batch.output.manifest import (
    batch_entry,
    build_manifest,
    landed_summary,
    manifest_bytes,
    structured_entry,
)
from airflow_provider_claude_batch.output.staging import Staging
from airflow_provider_claude_batch.output.tables import Tables, write_parquet
from airflow_provider_claude_batch.results.checks import (
    ExpectedResults,
    SeenIds,
    check_batch_ids,
    check_retention,
    expected_from_record,
    results_mismatch,
)
from airflow_provider_claude_batch.results.fold import TABLE_COLUMNS, fold_chunks
from airflow_provider_claude_batch.results.stream import IncompleteResults, ResultsReceiver, is_retryable_stream_error
from airflow_provider_claude_batch.results.totals import INVALID_OUTPUT, Totals
from airflow_provider_claude_batch.wait.events import total_requests

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow.sdk import ObjectStoragePath
    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.output.manifest import FileInfo, Json
    from airflow_provider_claude_batch.output.staging import Sink
    from airflow_provider_claude_batch.requests.structured import OutputSpec
    from airflow_provider_claude_batch.results.pricing import ModelPrice
    from airflow_provider_claude_batch.results.stream import ResultsSource
    from airflow_provider_claude_batch.results.structured import OutputCheck

# The checks a caller runs before landing, importable from here beside `land_results`.
__all__ = ["FORMATS", "LandingSettings", "check_batch_ids", "expected_from_record", "land_results"]

log = logging.getLogger(__name__)
FORMATS = ("jsonl", "csv", "parquet")


@dataclass(frozen=True)
class LandingSettings:
    """How results are landed: the table formats, how often a broken stream is read again, when to
    warn of expiry, the prices (default: the dated table in `results/pricing.py`), and the output_type
    each succeeded result is validated against (its fields become columns).
    """

    formats: tuple[str, ...] = ("jsonl",)
    stream_attempts: int = 3
    expiry_warning_seconds: float = 3 * 86400
    prices: Mapping[str, ModelPrice] | None = None
    output: OutputSpec | None = None
    concurrency: int = 1  # batches whose results are read at once (output/prefetch.py)


@dataclass
class _BatchLanded:
    batch: MessageBatch
    totals: Totals
    raw: FileInfo
    checked_against: str


def land_results(
    hook: ClaudeBatchHook,
    batch_ids: Sequence[str],
    output: ObjectStoragePath,
    settings: LandingSettings = LandingSettings(),
    now: Callable[[], float] = time.time,
    *,
    expected: Mapping[str, ExpectedResults] | None = None,
    within: ObjectStoragePath | None = None,
    estimate: Mapping[str, Any] | None = None,
    warmup: Mapping[str, Any] | None = None,
) -> Json:
    """Land every batch under `output` and return the manifest (also written as `_manifest.json`).

    Each batch's stream must hold exactly one result per submitted custom_id: `expected` says what
    was submitted (from the submission record or the input); a batch not in it is checked for
    duplicates and against its own request counts. On a local `output`, no file is written through
    a symlink that leads out of `within` (default: `output`). `estimate`: preflight's, shown beside the cost.
    `warmup`: the submission's cache warm-up (its record's), priced into the manifest's `caching`.
    """
    check_batch_ids(batch_ids)
    _check_formats(settings.formats)
    batches = [_ended_batch(hook, batch_id, batch_ids, settings, now()) for batch_id in batch_ids]
    staging = Staging(output, within)
    tables: Tables | None = None
    check = output_check(settings.output)
    try:
        columns = TABLE_COLUMNS + (check.columns if check is not None else ())
        tables = Tables(staging, settings.formats, columns)
        expected = expected or {}
        kept = KeptResults(output, staging.local)
        done_before = {batch.id for batch in batches if kept.has(batch.id)}
        if done_before:
            log.info("%d batch(es) read in full by an earlier landing: read from local disk", len(done_before))
        if settings.concurrency > 1 and len(batches) > 1:
            from airflow_provider_claude_batch.output.prefetch import Prefetcher

            prefetcher = Prefetcher(
                hook,
                batches,
                settings.concurrency - 1,
                lambda batch_id: staging.file(f"prefetch/{batch_id}.jsonl"),
                skip=done_before,
            )
        else:
            prefetcher = None
        landed = []
        try:
            for index, batch in enumerate(batches):
                if prefetcher is not None:
                    prefetcher.reading(index)
                want = expected.get(batch.id) or ExpectedResults(total_requests(batch.request_counts))
                source = kept if batch.id in done_before else prefetcher
                landed.append(_land_batch(hook, batch, staging, tables, settings, want, check, source))
                if batch.id not in done_before and len(batches) > 1:
                    kept.keep(batch.id, staging.file(landed[-1].raw.name))
        finally:
            if prefetcher is not None:
                prefetcher.close()
        totals = Totals()
        for item in landed:
            totals.add(item.totals)
        files = [item.raw for item in landed]
        files += tables.close()
        if "parquet" in settings.formats:
            kinds = check.kinds if check is not None else None
            files.append(write_parquet(staging, [item.totals.requests for item in landed], kinds))
        manifest = build_manifest(
            str(output),
            now(),
            [batch_entry(item.batch, item.raw.name, item.checked_against) for item in landed],
            landed_summary(totals, settings.prices, structured_verdicts(check, totals), warmup),
            files,
            estimate=estimate,
        )
        staging.publish([f.name for f in files], manifest_bytes(manifest))
        kept.clear()
        return manifest
    finally:
        if tables is not None:
            tables.abandon()
        staging.cleanup()


def structured_verdicts(check: OutputCheck | None, totals: Totals) -> Json | None:
    """The manifest's `structured_output` for results folded with `check` (None without an output_type)."""
    if check is None:
        return None
    invalid = totals.error_types.get(INVALID_OUTPUT, 0)
    return structured_entry(check.spec, check.kinds, totals.validated, invalid)


def output_check(spec: OutputSpec | None) -> OutputCheck | None:
    """The validator of an output_type's results (None without one)."""
    if spec is None:
        return None
    from airflow_provider_claude_batch.results.structured import OutputCheck

    return OutputCheck(spec)


def _check_formats(formats: Sequence[str]) -> None:
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise BatchInputError(f"Unknown output format(s) {sorted(unknown)}; choose from {FORMATS}.")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise BatchInputError(
                "Parquet output needs pyarrow: pip install 'airflow-provider-claude-batch[parquet]'."
            ) from None


def _ended_batch(
    hook: ClaudeBatchHook, batch_id: str, batch_ids: Sequence[str], settings: LandingSettings, now: float
) -> MessageBatch:
    """The batch, if it is the one asked for, has ended and its results are still there."""
    batch = hook.retrieve_batch(batch_id)
    if batch.id != batch_id:
        raise BatchInFlightError(
            f"Asked the API for batch {batch_id} and it answered with batch {batch.id!r}; nothing was landed.",
            [batch_id],
        )
    if batch.processing_status != "ended":
        raise ClaudeBatchError(
            f"Batch {batch_id} is {batch.processing_status}; wait for it to end first.", list(batch_ids)
        )
    check_retention(batch, settings.expiry_warning_seconds, now)
    return batch


def _land_batch(
    hook: ClaudeBatchHook,
    batch: MessageBatch,
    staging: Staging,
    tables: Tables,
    settings: LandingSettings,
    expected: ExpectedResults,
    check: OutputCheck | None,
    source: ResultsSource | None = None,
) -> _BatchLanded:
    """One pass over the batch's results stream; a stream that breaks, or does not hold exactly one
    result per submitted custom_id, is read again from the start (and the rows this batch had added
    so far are taken back first). `source`: where the first reading comes from (default: the hook).
    """
    start = tables.mark()
    attempt = 1
    while True:
        totals = Totals()
        raw = staging.sink(f"raw/{batch.id}.jsonl")
        try:
            first = source if source is not None and attempt == 1 else hook
            _stream_batch(first, batch, raw, tables, totals, expected, check)
        except Exception as exc:
            if not is_retryable_stream_error(exc) or attempt >= settings.stream_attempts:
                raise
            log.warning(
                "Results of batch %s broke off (attempt %d: %s); reading them again from the start",
                batch.id,
                attempt,
                exc,
            )
            tables.rollback(start)
            attempt += 1
            continue
        finally:
            raw.close()
        log.info("Batch %s: %d results streamed (%.1f MB)", batch.id, totals.requests, raw.size / 1e6)
        return _BatchLanded(batch, totals, raw.info(rows=totals.requests), expected.checked_against)


def _stream_batch(
    hook: ClaudeBatchHook | ResultsSource,
    batch: MessageBatch,
    raw: Sink,
    tables: Tables,
    totals: Totals,
    expected: ExpectedResults,
    check: OutputCheck | None,
) -> None:
    """Read the stream once into `raw`, `tables` and `totals`; raise unless it is what was submitted."""
    seen = SeenIds()
    with ResultsReceiver(hook, batch, raw) as chunks:
        for folded in fold_chunks(chunks, batch.id, totals, check):
            tables.add(folded.rows, folded.failed)
            seen.add(folded.rows)
    if totals.requests < expected.count:
        raise IncompleteResults(f"{totals.requests} result lines for {expected.count} requests")
    mismatch = results_mismatch(batch.id, seen, expected)
    if mismatch is not None:
        raise ResultsMismatchError(
            mismatch[0].upper()
            + mismatch[1:]
            + ". Nothing was published; a retry of the task reads the results again.",
            [batch.id],
        )
