"""Land ended batches' results in object storage: one streaming pass per batch, files that are
complete or absent, and `_manifest.json` written last as the commit marker.

Everything is first written to a staging area (a hidden folder next to local output, or a local
temporary folder for remote output), then published file by file: a local rename, or one upload
per object (object stores publish an object only when its upload completes). A kill at any point
leaves the previous complete files, or none, and nothing a reader could take for results.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO

import msgspec
from msgspec.structs import astuple

from airflow_provider_claude_batch.exceptions import (
    BatchInFlightError,
    BatchInputError,
    ClaudeBatchError,
    ResultsArchivedError,
    ResultsMismatchError,
)
from airflow_provider_claude_batch.results.fold import (
    TABLE_COLUMNS,
    ExpectedResults,
    SeenIds,
    TableRow,
    Totals,
    encode_rows,
    fold_lines,
    results_mismatch,
    valid_batch_id,
)
from airflow_provider_claude_batch.results.pricing import ModelPrice, cost_of
from airflow_provider_claude_batch.storage import is_local
from airflow_provider_claude_batch.wait.events import total_requests

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import TracebackType

    from airflow.sdk import ObjectStoragePath
    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.requests.plan import BatchPlan
    from airflow_provider_claude_batch.submit.record import SubmissionRecord

log = logging.getLogger(__name__)
MANIFEST_NAME = "_manifest.json"
STAGING_PREFIX = ".claude-batch-staging-"
RESULTS_RETENTION_SECONDS = 29 * 86400
FORMATS = ("jsonl", "csv", "parquet")
MANIFEST_VERSION = 1
RECEIVE_CHUNK_BYTES = 1 << 18
# Chunks received but not yet parsed: a bound on memory (about 1 MB), not a tuning knob.
RECEIVED_CHUNKS_AHEAD = 4
# A cell starting with one of these is run as a formula by spreadsheets (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class LandingSettings:
    formats: tuple[str, ...] = ("jsonl",)
    stream_attempts: int = 3
    expiry_warning_seconds: float = 3 * 86400
    prices: Mapping[str, ModelPrice] | None = None


@dataclass
class FileInfo:
    name: str
    bytes: int = 0
    sha256: str = ""
    rows: int | None = None


@dataclass
class _BatchLanded:
    batch: Any
    totals: Totals
    raw: FileInfo
    checked_against: str


class _Sink:
    """A staging file that counts its bytes, and hashes and fsyncs them if it is published.

    It is hashed as it is written, so no published file is ever read back to hash it.
    """

    def __init__(self, path: str, *, published: bool = True) -> None:
        self.path = path
        self.handle: BinaryIO = open(path, "wb")  # noqa: SIM115  (closed in close())
        self.published = published
        self.hash = hashlib.sha256()
        self.size = 0
        self.rows = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        if self.published:
            self.hash.update(data)
        self.size += len(data)

    def mark(self) -> _SinkMark:
        return _SinkMark(self.size, self.rows, self.hash.copy())

    def rollback(self, mark: _SinkMark) -> None:
        """Forget everything written since `mark`: bytes, rows and hash, as if never written."""
        self.handle.seek(mark.size)
        self.handle.truncate()
        self.size, self.rows, self.hash = mark.size, mark.rows, mark.hash.copy()

    def close(self) -> None:
        if self.handle.closed:
            return
        if self.published:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        self.handle.close()


@dataclass(frozen=True)
class _SinkMark:
    size: int
    rows: int
    hash: Any


class _Tables:
    """The files every batch adds rows to, written as results are parsed: the table (JSONL, CSV) and
    the failures. Batches are landed one after another, so each file is the batches' rows in order.
    """

    def __init__(self, staging: _Staging, formats: Sequence[str]) -> None:
        # The JSONL table is also what Parquet is built from, so it is staged for either format.
        self.jsonl = (
            _Sink(staging.file("results.jsonl"), published="jsonl" in formats)
            if "jsonl" in formats or "parquet" in formats
            else None
        )
        self.failures = _Sink(staging.file("failures.jsonl"))
        self.csv = _Sink(staging.file("results.csv")) if "csv" in formats else None
        self._csv_text = io.StringIO()
        self._csv_writer = csv.writer(self._csv_text, lineterminator="\n")
        if self.csv is not None:
            self.csv.write((",".join(TABLE_COLUMNS) + "\n").encode())

    @property
    def sinks(self) -> list[_Sink]:
        return [sink for sink in (self.jsonl, self.failures, self.csv) if sink is not None]

    def add(self, rows: list[TableRow], failed: list[TableRow]) -> None:
        """One write per file and block of results (hundreds of rows), not one per result."""
        if self.jsonl is not None:
            self.jsonl.write(encode_rows(rows))
            self.jsonl.rows += len(rows)
        if failed:
            self.failures.write(encode_rows(failed))
            self.failures.rows += len(failed)
        if self.csv is not None:
            self._csv_writer.writerows(map(spreadsheet_safe_row, map(astuple, rows)))
            self.csv.write(self._csv_text.getvalue().encode())
            self.csv.rows += len(rows)
            self._csv_text.seek(0)
            self._csv_text.truncate()

    def mark(self) -> list[_SinkMark]:
        return [sink.mark() for sink in self.sinks]

    def rollback(self, marks: list[_SinkMark]) -> None:
        for sink, mark in zip(self.sinks, marks, strict=True):
            sink.rollback(mark)

    def close(self) -> list[FileInfo]:
        """Sync and describe the files to publish, in the manifest's order."""
        files = []
        for sink, name in ((self.jsonl, "results.jsonl"), (self.failures, "failures.jsonl"), (self.csv, "results.csv")):
            if sink is not None:
                sink.close()
                if sink.published:
                    files.append(FileInfo(name, sink.size, sink.hash.hexdigest(), sink.rows))
        return files


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, prefixed with a single quote (shown as text)."""
    if value.__class__ is str and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def spreadsheet_safe_row(values: Sequence[Any]) -> list[Any]:
    return [spreadsheet_safe(v) for v in values]


def check_batch_ids(batch_ids: Sequence[str]) -> None:
    """Batch IDs name files under the output and go into request paths, trigger kwargs and Console links:
    refuse any that is not the API's shape, before any call.
    """
    bad = [b for b in batch_ids if not valid_batch_id(b)]
    if bad:
        raise BatchInputError(
            f"Not a Message Batch ID: {', '.join(repr(b) for b in bad[:5])}. IDs look like msgbatch_ followed by "
            "letters, digits and underscores; nothing was asked of the API."
        )


def expected_from_record(
    record: SubmissionRecord | None, custom_ids: Sequence[str] | None = None, plans: Sequence[BatchPlan] = ()
) -> dict[str, ExpectedResults]:
    """What each recorded batch's results must hold: its count and custom_ids' sha256, and the custom_ids
    themselves when the input at hand was split as the record says (a list slice: 8 bytes per ID).
    """
    expected: dict[str, ExpectedResults] = {}
    for part in record.parts if record is not None else ():
        if part.batch_id is None:
            continue
        plan = plans[part.index] if part.index < len(plans) else None
        exact = None
        if (
            custom_ids is not None
            and plan is not None
            and plan.request_count == part.request_count
            and custom_ids[plan.first] == part.first_custom_id
            and custom_ids[plan.stop - 1] == part.last_custom_id
        ):
            exact = custom_ids[plan.first : plan.stop]
        expected[part.batch_id] = ExpectedResults(part.request_count, part.custom_ids_sha256, exact)
    return expected


def check_retention(batch: MessageBatch, warning_seconds: float, now: float) -> None:
    """Fail at once for archived results (no retry can help); warn when the deadline is near."""
    created = batch.created_at.timestamp()
    archived_at = batch.archived_at.timestamp() if batch.archived_at else created + RESULTS_RETENTION_SECONDS
    if batch.archived_at is not None or now >= archived_at:
        raise ResultsArchivedError(
            f"The results of batch {batch.id} (created {_iso(created)}) were archived on {_iso(archived_at)}, "
            "29 days after creation, and can no longer be downloaded. Land results well before that.",
            [batch.id],
        )
    if now >= archived_at - warning_seconds:
        log.warning(
            "The results of batch %s expire on %s (%.1f days from now): land them now",
            batch.id,
            _iso(archived_at),
            (archived_at - now) / 86400,
        )


def land_results(
    hook: ClaudeBatchHook,
    batch_ids: Sequence[str],
    output: ObjectStoragePath,
    settings: LandingSettings = LandingSettings(),
    now: Callable[[], float] = time.time,
    *,
    expected: Mapping[str, ExpectedResults] | None = None,
    within: ObjectStoragePath | None = None,
) -> dict[str, Any]:
    """Land every batch under `output` and return the manifest (also written as `_manifest.json`).

    Each batch's stream must hold exactly one result per submitted custom_id: `expected` says what
    was submitted (from the submission record or the input); a batch not in it is checked for
    duplicates and against its own request counts. On a local `output`, no file is written through
    a symlink that leads out of `within` (default: `output`).
    """
    check_batch_ids(batch_ids)
    unknown = set(settings.formats) - set(FORMATS)
    if unknown:
        raise BatchInputError(f"Unknown output format(s) {sorted(unknown)}; choose from {FORMATS}.")
    if "parquet" in settings.formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise BatchInputError(
                "Parquet output needs pyarrow: pip install 'airflow-provider-claude-batch[parquet]'."
            ) from None
    batches = []
    for batch_id in batch_ids:
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
        check_retention(batch, settings.expiry_warning_seconds, now())
        batches.append(batch)
    staging = _Staging(output, within)
    tables: _Tables | None = None
    try:
        tables = _Tables(staging, settings.formats)
        expected = expected or {}
        landed = [
            _land_batch(
                hook,
                batch,
                staging,
                tables,
                settings,
                expected.get(batch.id) or ExpectedResults(total_requests(batch.request_counts)),
            )
            for batch in batches
        ]
        totals = Totals()
        for item in landed:
            totals.add(item.totals)
        files = [item.raw for item in landed]
        files += tables.close()
        if "parquet" in settings.formats:
            files.append(_parquet(staging, landed))
        manifest = _manifest(output, landed, totals, files, settings, now())
        staging.publish([f.name for f in files], msgspec.json.format(msgspec.json.encode(manifest), indent=2))
        return manifest
    finally:
        if tables is not None:
            for sink in tables.sinks:
                sink.handle.close()
        staging.cleanup()


def _land_batch(
    hook: ClaudeBatchHook,
    batch: MessageBatch,
    staging: _Staging,
    tables: _Tables,
    settings: LandingSettings,
    expected: ExpectedResults,
) -> _BatchLanded:
    """One pass over the batch's results stream; a stream that breaks, or does not hold exactly one
    result per submitted custom_id, is read again from the start (and the rows this batch had added
    so far are taken back first).
    """
    start = tables.mark()
    for attempt in range(1, settings.stream_attempts + 1):
        totals = Totals()
        seen = SeenIds()
        raw = _Sink(staging.file(f"raw/{batch.id}.jsonl"))
        try:
            with _Receiver(hook, batch, raw) as chunks:
                pending = b""
                for chunk in chunks:
                    end = chunk.rfind(b"\n") + 1
                    if not end:
                        pending += chunk
                        continue
                    folded = fold_lines(pending + chunk[:end], batch.id, totals)
                    pending = chunk[end:]
                    tables.add(folded.rows, folded.failed)
                    seen.add(folded.rows)
                if pending.strip():
                    folded = fold_lines(pending, batch.id, totals)
                    tables.add(folded.rows, folded.failed)
                    seen.add(folded.rows)
            if totals.requests < expected.count:
                raise _IncompleteResults(f"{totals.requests} result lines for {expected.count} requests")
            mismatch = results_mismatch(batch.id, seen, expected)
            if mismatch is not None:
                raise ResultsMismatchError(
                    mismatch[0].upper() + mismatch[1:] + ". Nothing was published; a retry "
                    "of the task reads the results again.",
                    [batch.id],
                )
        except Exception as exc:
            if not _is_retryable_stream_error(exc) or attempt == settings.stream_attempts:
                raise
            log.warning(
                "Results of batch %s broke off (attempt %d: %s); reading them again from the start",
                batch.id,
                attempt,
                exc,
            )
            tables.rollback(start)
            continue
        finally:
            raw.close()
        log.info("Batch %s: %d results streamed (%.1f MB)", batch.id, totals.requests, raw.size / 1e6)
        info = FileInfo(f"raw/{batch.id}.jsonl", raw.size, raw.hash.hexdigest(), totals.requests)
        return _BatchLanded(batch, totals, info, expected.checked_against)
    raise AssertionError("unreachable")


class _Receiver:
    """The results stream in chunks as received, each written to the raw file first.

    A thread receives, writes and hashes the raw copy (socket reads, file writes and sha256 let go of
    the GIL) while the caller parses the chunks before: the two overlap on two cores, and the server
    is not kept waiting while a chunk is parsed. At most RECEIVED_CHUNKS_AHEAD chunks wait, so memory
    stays flat however many results there are.
    """

    _END = object()

    def __init__(self, hook: ClaudeBatchHook, batch: MessageBatch, raw: _Sink) -> None:
        self._hook, self._batch, self._raw = hook, batch, raw
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=RECEIVED_CHUNKS_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name=f"results-{batch.id}", daemon=True)

    def __enter__(self) -> Iterator[bytes]:
        self._thread.start()
        return self._chunks()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # Normally the thread has already finished; after an error here it stops at its next chunk.
        self._stop.set()
        self._thread.join(timeout=30)

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _receive(self) -> None:
        try:
            with self._hook.open_results(self._batch) as response:
                for chunk in response.iter_bytes(RECEIVE_CHUNK_BYTES):
                    self._raw.write(chunk)
                    if not self._put(chunk):
                        return
            self._put(self._END)
        except BaseException as exc:  # handed to the parsing side, which raises it (or retries)
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class _IncompleteResults(Exception):
    pass


def _is_retryable_stream_error(exc: Exception) -> bool:
    import anthropic
    import httpx2

    return isinstance(
        exc, _IncompleteResults | ResultsMismatchError | httpx2.TransportError | anthropic.APIConnectionError
    ) or (isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 500)


def _parquet(staging: _Staging, landed: list[_BatchLanded]) -> FileInfo:
    """Built from the staged JSONL table (written whether or not JSONL is published); row groups of
    10,000 rows, restarted at each batch.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    text_columns = {
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
    schema = pa.schema([(c, pa.string() if c in text_columns else pa.int64()) for c in TABLE_COLUMNS])
    path = staging.file("results.parquet")
    rows = 0
    decoder = msgspec.json.Decoder()
    with pq.ParquetWriter(path, schema) as writer, open(staging.file("results.jsonl"), "rb") as source:
        for item in landed:
            chunk: list[dict[str, Any]] = []
            for line in itertools.islice(source, item.totals.requests):
                chunk.append(decoder.decode(line))
                if len(chunk) == 10_000:
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


def _manifest(
    output: ObjectStoragePath,
    landed: list[_BatchLanded],
    totals: Totals,
    files: list[FileInfo],
    settings: LandingSettings,
    now: float,
) -> dict[str, Any]:
    cost = cost_of(totals.usage_by_model, settings.prices) if settings.prices else cost_of(totals.usage_by_model)
    batches = []
    for item in landed:
        batch = item.batch
        created = batch.created_at.timestamp()
        batches.append(
            {
                "id": batch.id,
                "created_at": _iso(created),
                "ended_at": _iso(batch.ended_at.timestamp()) if batch.ended_at else None,
                "results_expire_at": _iso(created + RESULTS_RETENTION_SECONDS),
                "canceled": batch.cancel_initiated_at is not None,
                "request_counts": batch.request_counts.to_dict(),
                "raw_file": item.raw.name,
                "results_checked_against": item.checked_against,
            }
        )
    return {
        "manifest_version": MANIFEST_VERSION,
        "written_at": _iso(now),
        "output_path": str(output),
        "batches": batches,
        "requests": totals.requests,
        "counts": totals.counts,
        "failed": totals.failed,
        "failed_fraction": round(totals.failed / totals.requests, 6) if totals.requests else 0.0,
        "error_types": totals.error_types,
        "usage": {
            model: {k: v for k, v in vars(u).items() if not k.startswith("long_prompt")}
            for model, u in sorted(totals.usage_by_model.items())
        },
        "usage_total": totals.usage_total(),
        "cost": cost.to_dict(),
        "cost_complete": not totals.problems and not cost.unpriced_models,  # (tokens of either are not priced)
        "result_problems": result_problems(totals),
        "files": [vars(f) for f in files],
    }


def result_problems(totals: Totals) -> dict[str, dict[str, Any]]:
    """The manifest's flags: results whose usage could not be counted, with a few custom_ids each."""
    return {
        kind: {"results": number, "examples": totals.problem_examples.get(kind, [])}
        for kind, number in sorted(totals.problems.items())
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class _Staging:
    """Where files are written before they are published to `output`."""

    def __init__(self, output: ObjectStoragePath, within: ObjectStoragePath | None = None) -> None:
        self.output = output
        self.local = is_local(output)
        if self.local:
            # Where the user's path itself leads is the user's choice; below it, nothing may lead out.
            self.boundary = os.path.realpath((within or output).path)
            os.makedirs(output.path, exist_ok=True)
            self._check_inside(output.path)
            _sweep_stale_staging(output.path)
            self.root = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output.path)
            self._check_inside(self.root)
        else:
            self.root = tempfile.mkdtemp(prefix=STAGING_PREFIX)

    def _check_inside(self, path: str) -> None:
        resolved = os.path.realpath(path)
        if resolved != self.boundary and not resolved.startswith(self.boundary + os.sep):
            raise BatchInputError(
                f"{path} leads out of the output folder {self.boundary} (to {resolved}, through a "
                "symlink); remove the link. Nothing was published."
            )

    def file(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def publish(self, names: Sequence[str], manifest: bytes) -> None:
        """Every file first, the manifest last: a reader that sees the manifest sees complete files."""
        with open(self.file(MANIFEST_NAME), "wb") as handle:
            handle.write(manifest)
        if self.local:  # every target checked before the first is published
            for name in [*names, MANIFEST_NAME]:
                self._check_inside(os.path.join(self.output.path, name))
        for name in [*names, MANIFEST_NAME]:
            source = os.path.join(self.root, name)
            if self.local:
                target = os.path.join(self.output.path, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(source, target)
            else:
                _upload(source, self.output / name)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _upload(source: str, target: ObjectStoragePath) -> None:
    """One object per file; on failure the upload is discarded, so no partial object appears."""
    # The filesystem's own file object, not ObjectStoragePath's wrapper: discarding must reach it.
    handle = target.fs.open(target.path, mode="wb")
    try:
        with open(source, "rb") as data:
            shutil.copyfileobj(data, handle, 8 << 20)
    except BaseException:
        discard = getattr(handle, "discard", None)
        if discard is not None:
            discard()
            handle.closed = True  # fsspec would otherwise try to flush the discarded buffer
        raise
    handle.close()


def _sweep_stale_staging(directory: str, older_than: float = 3600.0) -> None:
    """Staging left by a killed run is hidden, and removed by the next run once it is an hour old."""
    cutoff = time.time() - older_than
    for entry in os.scandir(directory):
        if entry.name.startswith(STAGING_PREFIX) and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry.path, ignore_errors=True)
