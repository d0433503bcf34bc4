"""The durable submission record: which batches were created for which task instance and input.

It is what makes a retry, a clear or a backfill re-run re-attach instead of paying twice. The
record is written before each create (the intent) and after it (the batch ID), so a worker that
dies in between leaves enough behind for the next try to find the batch it made.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow_provider_claude_batch.requests.plan import BatchPlan

RECORD_VERSION = 1


@dataclass(frozen=True)
class TaskKey:
    """The task instance a submission belongs to; stable across retries, clears and backfill re-runs."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    def relative_path(self) -> str:
        """The task instance as a relative path (quoted parts), for file-based stores."""
        task = self.task_id if self.map_index < 0 else f"{self.task_id}.{self.map_index}"
        return "/".join(urllib.parse.quote(part, safe="") for part in (self.dag_id, self.run_id, task))


@dataclass(frozen=True)
class PartRecord:
    """One batch of the submission. `intent_at` set without `batch_id`: a create was sent, outcome unknown."""

    index: int
    request_count: int
    body_bytes: int
    first_custom_id: str
    last_custom_id: str
    intent_at: float | None = None
    batch_id: str | None = None
    adopted: bool = False
    created_at: float | None = None
    # sha256 over the part's sorted custom_ids, so landing can check its results (None in older records).
    custom_ids_sha256: str | None = None


@dataclass(frozen=True)
class SubmissionRecord:
    """What was planned and created for one task instance's input: read by every later try."""

    key: TaskKey
    fingerprint: str
    parts: tuple[PartRecord, ...]
    created_at: float
    updated_at: float
    attempt_id: str = ""
    record_id: str = ""
    version: int = RECORD_VERSION
    # Preflight's cost estimate (`preflight.estimate.CostEstimate.to_dict`), shown beside the actual cost.
    estimate: dict[str, Any] | None = None
    # The cache warm-up's calls and usage per model (submit/warmup.py), once done: never repeated.
    warmup: dict[str, Any] | None = None

    @classmethod
    def new(
        cls,
        key: TaskKey,
        fingerprint: str,
        plans: Sequence[BatchPlan],
        custom_ids: Sequence[str],
        now: float | None = None,
        attempt_id: str = "",
        estimate: dict[str, Any] | None = None,
    ) -> SubmissionRecord:
        """A fresh record for `plans`, before anything is created."""
        now = time.time() if now is None else now
        from airflow_provider_claude_batch.results.checks import custom_ids_digest

        parts = tuple(
            PartRecord(
                p.index,
                p.request_count,
                p.body_bytes,
                custom_ids[p.first],
                custom_ids[p.stop - 1],
                custom_ids_sha256=custom_ids_digest(custom_ids[p.first : p.stop]),
            )
            for p in plans
        )
        return cls(key, fingerprint, parts, now, now, attempt_id, secrets.token_hex(8), estimate=estimate)

    @property
    def identity(self) -> str:
        """Names this record's claims; records written before claims existed are named by their creation time."""
        return self.record_id or f"t{self.created_at!r}".replace(".", "_")

    @property
    def batch_ids(self) -> list[str]:
        """The batch IDs created so far, in part order."""
        return [p.batch_id for p in self.parts if p.batch_id]

    @property
    def complete(self) -> bool:
        """Whether every part has its batch."""
        return all(p.batch_id for p in self.parts)

    def _with_part(self, part: PartRecord) -> SubmissionRecord:
        parts = tuple(part if p.index == part.index else p for p in self.parts)
        return dataclasses.replace(self, parts=parts, updated_at=time.time())

    def with_intent(self, index: int, at: float) -> SubmissionRecord:
        """The record with part `index`'s create about to be sent at `at` (epoch)."""
        return self._with_part(dataclasses.replace(self.parts[index], intent_at=at))

    def with_batch(self, index: int, batch_id: str, created_at: float, *, adopted: bool = False) -> SubmissionRecord:
        """The record with part `index`'s batch recorded."""
        part = dataclasses.replace(self.parts[index], batch_id=batch_id, adopted=adopted, created_at=created_at)
        return self._with_part(part)

    def with_warmup(self, warmup: dict[str, Any]) -> SubmissionRecord:
        """The record with the cache warm-up done (what it cost is priced at landing)."""
        return dataclasses.replace(self, warmup=warmup, updated_at=time.time())

    def merged_with(self, other: SubmissionRecord) -> SubmissionRecord:
        """This record, plus the batch IDs `other` (the same record as another attempt saved it) has and this lacks."""
        parts = tuple(
            mine if mine.batch_id or not theirs.batch_id else theirs
            for mine, theirs in zip(self.parts, other.parts, strict=True)
        )
        return dataclasses.replace(self, parts=parts, warmup=self.warmup or other.warmup)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists, not tuples), as the task state store's API accepts."""
        value: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(dataclasses.asdict(self)))
        return value

    def to_json(self) -> bytes:
        """The record as stored in a file."""
        return msgspec.json.format(msgspec.json.encode(self.to_dict()), indent=2)

    @classmethod
    def from_dict(cls, raw: object) -> SubmissionRecord:
        """The record `to_dict` wrote; raises ValueError (or KeyError/TypeError) on anything else."""
        if not isinstance(raw, dict):
            raise ValueError(f"a submission record is a JSON object, not {type(raw).__name__}")
        if raw.get("version") != RECORD_VERSION:
            raise ValueError(f"unsupported submission record version {raw.get('version')!r}")
        return cls(
            key=TaskKey(**raw["key"]),
            fingerprint=raw["fingerprint"],
            parts=tuple(PartRecord(**p) for p in raw["parts"]),
            created_at=raw["created_at"],
            updated_at=raw["updated_at"],
            attempt_id=raw.get("attempt_id", ""),
            record_id=raw.get("record_id", ""),
            estimate=raw.get("estimate"),
            warmup=raw.get("warmup"),
        )

    @classmethod
    def from_json(cls, data: bytes) -> SubmissionRecord:
        """A record read from a file; raises on a malformed or newer one."""
        return cls.from_dict(msgspec.json.decode(data))


def matches_part(
    part: PartRecord, *, request_total: int, created_at: float, since: float, claimed: Iterable[str], batch_id: str
) -> bool:
    """Could this listed batch be the one a lost create made for `part`?

    The API has no labels, so a batch is recognised by its request count and by having been
    created after we sent the create (minus a clock-skew margin), and not already claimed.
    """
    return request_total == part.request_count and created_at >= since and batch_id not in set(claimed)


@dataclass(frozen=True)
class Claim:
    """Who won the right to do one step (open a record, create one part's batch), and when."""

    holder: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        """The claim as stored."""
        return {"holder": self.holder, "at": self.at}

    @classmethod
    def from_dict(cls, raw: object) -> Claim:
        """A stored claim; raises ValueError on anything else."""
        if not isinstance(raw, dict) or not isinstance(raw.get("holder"), str):
            raise ValueError(f"not a claim: {raw!r}")
        return cls(raw["holder"], float(raw["at"]))


def successor_claim(previous: SubmissionRecord | None) -> str:
    """The claim two attempts race for when both start a record after `previous` (None: the first)."""
    return f"record-after-{previous.identity if previous is not None else 'none'}"


def part_claim(record: SubmissionRecord, index: int, generation: int) -> str:
    """The claim on creating part `index` of `record`; generation g+1 takes over a stale g."""
    return f"create-{record.identity}-part-{index}-gen-{generation}"


def claim_is_stale(claim: Claim, record: SubmissionRecord | None, now: float, stale_after: float) -> bool:
    """A holder that has written neither its claim nor the record for `stale_after` seconds is taken for dead."""
    last_sign = max(claim.at, record.updated_at if record is not None else 0.0)
    return now - last_sign > stale_after
