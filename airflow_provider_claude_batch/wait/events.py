"""What a wait ends with: the batches' snapshots and the outcome a trigger hands back to the task,
with its validation on resume. Pure: no Airflow, no SDK at run time.

Everything the resumed method needs travels in the payload: `dag.test()` drops the `kwargs`
given to `defer()`, so nothing may depend on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

if TYPE_CHECKING:
    from datetime import datetime

    from anthropic.types.messages import MessageBatch, MessageBatchRequestCounts

WaitStatus = Literal["ended", "timeout", "error"]
ErrorKind = Literal["refused", "unavailable"]
_STATUSES = ("ended", "timeout", "error")


class SnapshotPayload(TypedDict):
    """A `BatchSnapshot` as it travels in a trigger event (JSON)."""

    id: str
    processing_status: str
    request_counts: dict[str, int]
    created_at: str | None
    ended_at: str | None
    cancel_initiated_at: str | None


class WaitPayload(TypedDict):
    """A `WaitOutcome` as it travels in a trigger event (JSON)."""

    status: WaitStatus
    batch_ids: list[str]
    message: str
    error_kind: ErrorKind | None
    batches: dict[str, SnapshotPayload]


@dataclass(frozen=True)
class BatchSnapshot:
    """What the task needs to know about one batch when the wait is over."""

    id: str
    processing_status: str
    request_counts: dict[str, int]
    created_at: str | None = None
    ended_at: str | None = None
    cancel_initiated_at: str | None = None

    @property
    def canceled(self) -> bool:
        """Whether someone asked to cancel the batch (its unfinished requests were not processed)."""
        return self.cancel_initiated_at is not None

    def to_dict(self) -> SnapshotPayload:
        """The snapshot as JSON-ready data for a trigger event."""
        return {
            "id": self.id,
            "processing_status": self.processing_status,
            "request_counts": dict(self.request_counts),
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "cancel_initiated_at": self.cancel_initiated_at,
        }


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait ended (every batch ended, the deadline passed, or the API failed) and what it saw."""

    status: WaitStatus
    batch_ids: list[str]
    batches: dict[str, BatchSnapshot] = field(default_factory=dict)
    message: str = ""
    error_kind: ErrorKind | None = None

    def to_payload(self) -> WaitPayload:
        """The outcome as a trigger event's payload."""
        return {
            "status": self.status,
            "batch_ids": list(self.batch_ids),
            "message": self.message,
            "error_kind": self.error_kind,
            "batches": {k: v.to_dict() for k, v in self.batches.items()},
        }

    @classmethod
    def from_payload(cls, event: object) -> WaitOutcome:
        """Validate a trigger event; anything malformed (including no event) is a clear error."""
        if not isinstance(event, Mapping):
            raise ValueError(f"the wait trigger returned no usable event (got {type(event).__name__})")
        status = event.get("status")
        if status not in _STATUSES:
            raise ValueError(f"the wait trigger returned an unknown status {status!r}")
        batch_ids = event.get("batch_ids")
        if not isinstance(batch_ids, list) or not all(isinstance(b, str) for b in batch_ids):
            raise ValueError("the wait trigger's event has no batch_ids list")
        raw_batches = event.get("batches") or {}
        batches = {
            key: BatchSnapshot(
                id=str(value["id"]),
                processing_status=str(value["processing_status"]),
                request_counts={str(k): int(v) for k, v in dict(value["request_counts"]).items()},
                created_at=value.get("created_at"),
                ended_at=value.get("ended_at"),
                cancel_initiated_at=value.get("cancel_initiated_at"),
            )
            for key, value in dict(raw_batches).items()
        }
        error_kind = event.get("error_kind")
        if error_kind not in (None, "refused", "unavailable"):
            raise ValueError(f"the wait trigger returned an unknown error kind {error_kind!r}")
        return cls(status, batch_ids, batches, str(event.get("message") or ""), error_kind)


def total_requests(request_counts: MessageBatchRequestCounts) -> int:
    """All requests of a batch, whatever their state."""
    counts = request_counts
    return int(counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired)


def _isoformat(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def snapshot(batch: MessageBatch) -> BatchSnapshot:
    """A BatchSnapshot from the SDK's MessageBatch."""
    return BatchSnapshot(
        id=batch.id,
        processing_status=batch.processing_status,
        request_counts={k: int(v) for k, v in batch.request_counts.model_dump().items()},
        created_at=_isoformat(batch.created_at),
        ended_at=_isoformat(batch.ended_at),
        cancel_initiated_at=_isoformat(batch.cancel_initiated_at),
    )
