"""The emulator's batches and their lifecycle, computed from the (movable) clock.

No HTTP here: the app turns these results and `ApiError`s into responses. A batch's state is a
pure function of its creation time, processing time, cancel time and the clock, so jumping the
clock forward 24 h or 29 days gives exactly what waiting would have given.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.emulator.cache import PromptCache
from airflow_provider_claude_batch.emulator.clock import EmulatorClock, rfc3339
from airflow_provider_claude_batch.emulator.models import ModelCatalog
from airflow_provider_claude_batch.emulator.outcomes import CacheVisit, OutcomePlanner, RequestRecord
from airflow_provider_claude_batch.emulator.structured import asked_schema
from airflow_provider_claude_batch.emulator.wire import (
    _FINAL_CODES,
    _FINAL_NAMES,
    ApiError,
    _decode_item,
    _decode_requests,
    _result_lines,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

DAY = 86_400.0
EXPIRY_SECONDS = 1 * DAY
ARCHIVE_SECONDS = 29 * DAY


@dataclass
class EmulatorConfig:
    """Knobs a test or the CLI may change at any time; they apply to batches created afterwards."""

    processing_seconds: float = 1.0
    cancel_seconds: float = 0.0
    api_key: str | None = "emulator-key"
    workspace_id: str = "wrkspc_emulator"
    max_requests: int = 100_000
    max_body_bytes: int = 256_000_000
    # A body that sends nothing for this long, or takes longer than this in all, gets a 408.
    body_idle_seconds: float = 30.0
    body_total_seconds: float = 600.0
    # Messages API (`POST /v1/messages`): seconds before each answer, and how many calls may be in
    # flight at once before the next gets a 429 with `retry-after` (0: no limit).
    messages_latency_seconds: float = 0.0
    messages_max_in_flight: int = 0
    # Prompt cache hits in batches are best-effort (the docs quote 30-98%): the share of a batch's
    # requests that read a cache entry they find (the rest write it again). Messages calls always read.
    cache_hit_probability: float = 0.9

    def update(self, changes: dict[str, Any]) -> None:
        """Apply all of `changes` or none: a value of the wrong type or sign is refused here, not
        stored to break every later call.
        """
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown emulator setting(s) {sorted(unknown)}")
        checked = msgspec.convert({**vars(self), **changes}, type(self))
        negative = [n for n, v in vars(checked).items() if isinstance(v, int | float) and not v >= 0]
        if negative:
            raise ValueError(f"emulator setting(s) {sorted(negative)} must be zero or more")
        if not checked.cache_hit_probability <= 1:
            raise ValueError("cache_hit_probability is a probability: between 0 and 1")
        for name in changes:
            setattr(self, name, getattr(checked, name))


@dataclass(eq=False)
class Batch:
    """One emulated batch: its requests' planned outcomes and the times that decide its status."""

    id: str
    seq: int
    created_at: float
    processing_seconds: float
    cancel_seconds: float
    records: list[RequestRecord]
    cancel_initiated_at: float | None = None
    cancel_calls: int = 0
    deleted: bool = False
    _final: bytearray | None = field(default=None, repr=False)
    _stragglers: bool | None = field(default=None, repr=False)

    @property
    def expires_at(self) -> float:
        """When the API gives up on the batch's unfinished requests (24 h after create)."""
        return self.created_at + EXPIRY_SECONDS

    @property
    def archived_after(self) -> float:
        """When the batch's results stop being served (29 days after create)."""
        return self.created_at + ARCHIVE_SECONDS

    @property
    def has_stragglers(self) -> bool:
        """Whether a request is held unfinished until expiry or a cancel (a `straggle` rule)."""
        if self._stragglers is None:
            self._stragglers = any(r.straggler for r in self.records)
        return self._stragglers

    def ends_at(self) -> float:
        """When processing ends: done, expired, or cut short by a cancel (stragglers hold it to expiry)."""
        end = (
            self.expires_at if self.has_stragglers else min(self.created_at + self.processing_seconds, self.expires_at)
        )
        if self.cancel_initiated_at is not None:
            end = min(end, self.cancel_initiated_at + self.cancel_seconds)
        return end

    def completion_time(self, rank: int) -> float:
        """Requests finish one after another over the processing time (what a cancel interrupts)."""
        return self.created_at + self.processing_seconds * (rank + 1) / len(self.records)

    def final_codes(self) -> bytearray:
        """Each request's final result type, fixed once the batch has ended."""
        if self._final is None:
            codes = bytearray(len(self.records))
            cut = self.cancel_initiated_at
            for rank, record in enumerate(self.records):
                done_at = float("inf") if record.straggler else self.completion_time(rank)
                if cut is not None and done_at > cut:
                    codes[rank] = _FINAL_CODES["canceled"]
                elif done_at > self.expires_at:
                    codes[rank] = _FINAL_CODES["expired"]
                else:
                    codes[rank] = _FINAL_CODES[record.outcome]
            self._final = codes
        return self._final


class BatchStore:
    """All batches of one emulated workspace, plus the counters tests inspect."""

    def __init__(self, config: EmulatorConfig | None = None, clock: EmulatorClock | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.clock = clock or EmulatorClock()
        self.planner = OutcomePlanner()
        self.models = ModelCatalog()
        self.cache = PromptCache()
        self._batches: dict[str, Batch] = {}
        self._seq = itertools.count(1)
        self.calls: dict[str, int] = {}
        self.responses: dict[str, int] = {}

    # ---- create -------------------------------------------------------------------------------
    def create(self, body: bytes | bytearray | memoryview, api_version: str) -> Batch:
        """A new batch from a create body, refused as the API refuses it (limits, duplicate custom_ids)."""
        items = _decode_requests(body, self.config.max_requests)
        seen: dict[str, int] = {}
        records: list[RequestRecord] = []
        cache = self.cache_visit(self.config.cache_hit_probability)
        for index, raw in enumerate(items):
            custom_id, params = _decode_item(raw, index)
            if custom_id in seen:
                raise ApiError(
                    400,
                    "invalid_request_error",
                    f"requests.{index}.custom_id: duplicate custom_id {custom_id!r} "
                    f"(also at requests.{seen[custom_id]}); custom_id must be unique within a batch",
                )
            seen[custom_id] = index
            record = self.planner.plan(custom_id, params, api_version, self.models, cache)
            records.append(self._refuse_unsupported_format(record, params))
        batch = Batch(
            id=_new_batch_id(),
            seq=next(self._seq),
            created_at=self.clock.now(),
            processing_seconds=max(0.0, float(self.config.processing_seconds)),
            cancel_seconds=max(0.0, float(self.config.cancel_seconds)),
            records=records,
        )
        self._batches[batch.id] = batch
        return batch

    def _refuse_unsupported_format(self, record: RequestRecord, params: bytes) -> RequestRecord:
        """A native structured-output request for a model without the capability errors, as the API's would."""
        if record.outcome != "succeeded" or record.tool_name or b'"output_config"' not in params:
            return record
        spec = self.models.resolve(record.model)
        asked = asked_schema(params)
        if spec is None or spec.structured_outputs or asked is None or asked[0] != "native":
            return record
        return RequestRecord(
            record.custom_id,
            "errored",
            record.digest,
            error_type="invalid_request_error",
            error_message=f"output_config.format: structured outputs are not supported by {record.model}",
        )

    def cache_visit(self, hit_probability: float = 1.0, *, hold_writes: bool = False) -> CacheVisit:
        """The workspace's prompt cache as a request meets it now (`hold_writes`: see `CacheVisit`)."""
        return CacheVisit(self.cache, self.clock.now(), hit_probability, [] if hold_writes else None)

    # ---- read ---------------------------------------------------------------------------------
    def get(self, batch_id: str) -> Batch:
        """The batch, or the API's 404 for an unknown or deleted one."""
        batch = self._batches.get(batch_id)
        if batch is None or batch.deleted:
            raise ApiError(404, "not_found_error", f"No message batch found with id {batch_id!r}")
        return batch

    def is_ended(self, batch: Batch) -> bool:
        """Whether the batch's processing is over at the emulated time."""
        return self.clock.now() >= batch.ends_at()

    def describe(self, batch: Batch, base_url: str, *, just_created: bool = False) -> dict[str, Any]:
        """The batch as the API's MessageBatch JSON (counts, status, results_url) at the emulated time."""
        """The MessageBatch object exactly as the API returns it (in_progress in a create's answer)."""
        now = self.clock.now()
        ended = now >= batch.ends_at() and not just_created
        counts = dict.fromkeys(("processing", *_FINAL_NAMES), 0)
        if ended:
            for code in batch.final_codes():
                counts[_FINAL_NAMES[code]] += 1
        else:
            counts["processing"] = len(batch.records)
        if ended:
            status = "ended"
        elif batch.cancel_initiated_at is not None:
            status = "canceling"
        else:
            status = "in_progress"
        cancel_at = batch.cancel_initiated_at
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": rfc3339(batch.ends_at()) if ended else None,
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.expires_at),
            "archived_at": rfc3339(batch.archived_after) if now >= batch.archived_after else None,
            "cancel_initiated_at": rfc3339(cancel_at) if cancel_at is not None else None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }

    def page(self, *, limit: int = 20, after_id: str | None = None, before_id: str | None = None) -> dict[str, Any]:
        """One page of the newest-first listing, with the API's cursor semantics."""
        if not 1 <= limit <= 1000:
            raise ApiError(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        if after_id and before_id:
            raise ApiError(400, "invalid_request_error", "Only one of after_id and before_id may be given")
        # Batches are stored in creation order, so newest first is the stored order reversed (no sort:
        # a triggerer paging through 10,000 batches reads 10 pages a poll cycle).
        ordered = [b for b in reversed(self._batches.values()) if not b.deleted]
        if after_id:
            start = self._cursor(ordered, after_id) + 1
            chosen = ordered[start : start + limit]
            has_more = start + limit < len(ordered)
        elif before_id:
            stop = self._cursor(ordered, before_id)
            chosen = ordered[max(0, stop - limit) : stop]
            has_more = stop - limit > 0
        else:
            chosen = ordered[:limit]
            has_more = limit < len(ordered)
        return {
            "chosen": chosen,
            "has_more": has_more,
            "first_id": chosen[0].id if chosen else None,
            "last_id": chosen[-1].id if chosen else None,
        }

    def _cursor(self, ordered: list[Batch], batch_id: str) -> int:
        batch = self._batches.get(batch_id)
        if batch is None or batch.deleted:
            raise ApiError(400, "invalid_request_error", f"Unknown pagination cursor {batch_id!r}")
        return ordered.index(batch)

    # ---- change -------------------------------------------------------------------------------
    def cancel(self, batch_id: str) -> Batch:
        """Start cancelling: unfinished requests end as canceled after `cancel_seconds`."""
        batch = self.get(batch_id)
        batch.cancel_calls += 1
        if self.is_ended(batch):
            raise ApiError(
                400,
                "invalid_request_error",
                f"Message batch {batch_id} has already ended and can no longer be canceled",
            )
        if batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = self.clock.now()
        return batch

    def delete(self, batch_id: str) -> None:
        """Delete an ended batch; the API refuses to delete one still in progress."""
        batch = self.get(batch_id)
        if not self.is_ended(batch):
            raise ApiError(
                400,
                "invalid_request_error",
                f"Message batch {batch_id} is still processing; cancel it and wait until it has ended",
            )
        batch.deleted = True
        batch.records = []

    def reset(self) -> None:
        """Forget every batch, call count, recorded response, outcome rule and added model."""
        self._batches.clear()
        self.calls.clear()
        self.responses.clear()
        self.planner = OutcomePlanner()
        self.models = ModelCatalog()
        self.cache.clear()

    # ---- results ------------------------------------------------------------------------------
    def results_lines(self, batch_id: str) -> Iterator[bytes]:
        """Each result as one JSONL line, in an order unrelated to the request order."""
        batch = self.get(batch_id)
        if not self.is_ended(batch):
            raise ApiError(400, "invalid_request_error", f"Message batch {batch_id} has not ended yet")
        if self.clock.now() >= batch.archived_after:
            raise ApiError(
                404,
                "not_found_error",
                f"The results of message batch {batch_id} were archived on {rfc3339(batch.archived_after)} "
                "(29 days after creation) and are no longer available",
            )
        return _result_lines(batch)

    # ---- inspection ---------------------------------------------------------------------------
    def inspect(self, *, with_custom_ids: bool) -> dict[str, Any]:
        """Counters and every batch made, for tests that prove nothing was submitted twice."""
        batches = []
        for batch in sorted(self._batches.values(), key=lambda b: b.seq):
            entry: dict[str, Any] = {
                "id": batch.id,
                "created_at": rfc3339(batch.created_at),
                "request_count": len(batch.records),
                "processing_status": "deleted"
                if batch.deleted
                else (
                    "ended"
                    if self.is_ended(batch)
                    else ("canceling" if batch.cancel_initiated_at is not None else "in_progress")
                ),
                "ended_at": rfc3339(batch.ends_at()) if not batch.deleted and self.is_ended(batch) else None,
                "canceled": batch.cancel_initiated_at is not None,
                "cancel_calls": batch.cancel_calls,
                "deleted": batch.deleted,
            }
            if with_custom_ids:
                entry["custom_ids"] = [r.custom_id for r in batch.records]
            batches.append(entry)
        return {
            "now": rfc3339(self.clock.now()),
            "batches_created": len(self._batches),
            "calls": dict(self.calls),
            "responses": dict(self.responses),
            "batches": batches,
        }


def _new_batch_id() -> str:
    return "msgbatch_emu_" + secrets.token_hex(12)
