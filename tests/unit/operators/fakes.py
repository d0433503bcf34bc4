"""A small fake of `ClaudeBatchHook` and of a task, for the operators' and steps' unit tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any


@dataclass
class FakeHook:
    """Batches by ID with a processing status; records the creates and cancels asked of it."""

    statuses: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    canceled: list[str] = field(default_factory=list)
    claude_batch_conn_id: str = "claude_batch_default"
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("fake_hook"))

    def retrieve_batch(self, batch_id: str) -> Any:
        return SimpleNamespace(id=batch_id, processing_status=self.statuses[batch_id])

    def cancel_batch(self, batch_id: str) -> Any:
        self.canceled.append(batch_id)
        self.statuses[batch_id] = "canceling"
        return self.retrieve_batch(batch_id)

    def create_batch_streamed(self, chunks: Any, content_length: int) -> Any:
        body = b"".join(chunks)
        assert len(body) == content_length
        batch_id = f"msgbatch_fake{len(self.created)}"
        self.created.append(batch_id)
        self.statuses[batch_id] = "in_progress"
        return SimpleNamespace(id=batch_id, created_at=datetime.now(UTC))

    def iter_batches(self, *, page_size: int = 100) -> Any:
        return iter(())

    def describe_error(self, exc: BaseException) -> str:
        return str(exc)


class Deferred(Exception):
    """What `FakeTask.defer` raises, as Airflow's TaskDeferred does: the trigger and the resume method."""

    def __init__(self, trigger: Any, method_name: str) -> None:
        super().__init__(method_name)
        self.trigger = trigger
        self.method_name = method_name


class FakeTask:
    """Anything with `defer`: raises `Deferred`."""

    def defer(self, *, trigger: Any, method_name: str, kwargs: Any = None, timeout: Any = None) -> Any:
        raise Deferred(trigger, method_name)


class FakeTI:
    """The task instance fields a submission record is keyed by."""

    dag_id, task_id, run_id, map_index = "dag", "task", "run", -1

    def __init__(self, attempt: str = "attempt-1") -> None:
        self.id = attempt
