"""Where the submission record lives, so a retry, a clear or a re-run on any worker re-attaches.

What Airflow 3.3's task state store (AIP-103, ``context["task_state_store"]``) keeps, read from the
3.3.2 source and checked by tests/integration/test_record_store.py:

- Scope: rows are keyed by (dag_run.id, task_id, map_index, key); every try of the task instance
  reads and writes the same rows, through the API server (`/execution/store/ti/...`), so any
  worker sees them.
- A retry (try 2, a new TI id) reads what try 1 wrote: kept.
- A clear of the task (or of the run) goes through `clear_task_instances`, which does not touch the
  store: kept. A "reprocess" backfill of a non-partitioned DAG clears the existing run
  (`_handle_clear_run`): kept. A partitioned DAG's reprocess creates a new run (new run_id): that
  is a new task instance, with no record in any location.
- Deleting the DAG run deletes its rows (foreign key, ON DELETE CASCADE): `dag.test()` run again
  for the same logical date deletes and re-creates the run, and so does "Delete run" in the UI.
- `[state_store] clear_on_success = True` deletes a task's rows when it succeeds, so a later clear
  would pay again. With that setting the store is not used (see `choose_record_home`).
- Expiry: `set()` without `retention` expires after `[state_store] default_retention_days` (30)
  and `airflow state-store clean` deletes it; we write with `NEVER_EXPIRE`, so a record outlives
  the API's 29 days of results.
- Size: `[state_store] max_value_storage_bytes` (64 KB) only warns for worker writes; a record is
  about 200 bytes per planned batch (it never lists custom_ids).
- No compare-and-set: `set()` is an upsert, last writer wins. Claims on it use `settled_claim`.

The rule (`choose_record_home`): an explicit `state_path` (or `[claude_batch] state_path`) wins;
else the task state store when the context has one; else the local disk under `$AIRFLOW_HOME`,
refused on a non-local executor before any API call. A record on the old default local path is
re-attached into the store.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Literal, Protocol

from airflow_provider_claude_batch._compat import never_expire
from airflow_provider_claude_batch.exceptions import StateNotSharedError, SubmissionRecordError
from airflow_provider_claude_batch.submit.record import Claim, SubmissionRecord, TaskKey

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.submit.path_store import PathRecordStore

log = logging.getLogger(__name__)

RecordHome = Literal["path", "task_state_store", "local_disk"]
LOCAL_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor"})
STORE_KEY = "claude_batch.submission"
DELETE_WARNING = (
    "Do not delete it to get past this error: without it the next try cannot see the batches "
    "already created and pays for them again."
)


class StateAccessor(Protocol):
    """What the record store uses of Airflow 3.3's task state store accessor (``context["task_state_store"]``)."""

    def get(self, key: str) -> Any:
        """The stored JSON value, or None."""
        ...

    def set(self, key: str, value: Any, *, retention: Any = ...) -> None:
        """Store a JSON value (an upsert) for `retention` (an Airflow retention value)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the key."""
        ...


class RecordStore(Protocol):
    """One task instance's submission records, and claims that let one attempt act at a time."""

    @property
    def location(self) -> str:
        """Where the records are, for messages."""
        ...

    def load(self, key: TaskKey) -> SubmissionRecord | None:
        """The task instance's record, or None when it has none."""
        ...

    def save(self, record: SubmissionRecord) -> None:
        """Store the record (replacing the previous one)."""
        ...

    def claim(self, key: TaskKey, name: str, mine: Claim) -> Claim:
        """The holder of claim `name`: `mine` if this call won it, else whoever holds it."""
        ...

    def release(self, key: TaskKey, name: str, holder: str) -> None:
        """Give claim `name` back if `holder` holds it (an attempt that failed before creating)."""
        ...

    def for_round(self, round_number: int) -> RecordStore:
        """The store of a resubmission round's record (round 0 is this one)."""


def is_local_executor(executor_setting: str) -> bool:
    """True when every executor in `[core] executor` (a comma-separated list, entries possibly
    ``alias:module.Class``) runs tasks on the scheduler's machine.
    """
    names = [entry.strip().rsplit(":", 1)[-1].rsplit(".", 1)[-1] for entry in executor_setting.split(",")]
    names = [n for n in names if n]
    return bool(names) and all(n in LOCAL_EXECUTORS for n in names)


def choose_record_home(
    *, state_path: str | None, store_available: bool, clear_on_success: bool, executor: str
) -> RecordHome:
    """Where the record goes; raises `StateNotSharedError` when only a disk other workers cannot see is left."""
    if state_path:
        return "path"
    if store_available and not clear_on_success:
        return "task_state_store"
    if is_local_executor(executor):
        return "local_disk"
    why = (
        "[state_store] clear_on_success = True deletes the task state store's record when the task succeeds"
        if store_available
        else "the task has no task state store (Airflow < 3.3, or a context without one)"
    )
    raise StateNotSharedError(
        f"No shared place for the submission record: {why}, and the default under $AIRFLOW_HOME is on this "
        f"worker's disk, which a retry on another worker of [core] executor = {executor} cannot read (it would "
        "submit and pay again). Set [claude_batch] state_path (or the operator's state_path) to storage every "
        "worker shares, e.g. s3://bucket/claude-batch-state. Nothing was submitted."
    )


def settled_claim(
    read: Callable[[], Claim | None],
    write: Callable[[Claim], None],
    mine: Claim,
    settle_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Claim:
    """Claim a last-writer-wins register (Fischer's mutual exclusion): read; if free, write, wait, read back.

    Of attempts racing for a free register, at most one reads back its own claim, provided each
    one's write lands within `settle_seconds` of the read that found it free.
    """
    current = read()
    if current is not None:
        return current
    write(mine)
    sleep(settle_seconds)
    current = read()
    if current is None:
        raise SubmissionRecordError(
            "A claim written to the submission record's store vanished; another process "
            "is deleting it. Nothing was created for it."
        )
    return current


class TaskStateRecordStore:
    """Records in Airflow's task state store (one key per round), re-attaching a record found on `legacy`."""

    def __init__(
        self,
        accessor: StateAccessor,
        *,
        settle_seconds: float,
        legacy: PathRecordStore | None = None,
        round_number: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.accessor = accessor
        self.settle_seconds = settle_seconds
        self.legacy = legacy
        self.round_number = round_number
        self.sleep = sleep
        self.record_key = STORE_KEY if round_number == 0 else f"{STORE_KEY}.round-{round_number}"

    @property
    def location(self) -> str:
        """Where the records are, for messages."""
        return f"the task state store, key {self.record_key!r}"

    def for_round(self, round_number: int) -> TaskStateRecordStore:
        """The store of a resubmission round's record, under its own key."""
        legacy = self.legacy.for_round(round_number) if self.legacy is not None else None
        return TaskStateRecordStore(
            self.accessor,
            settle_seconds=self.settle_seconds,
            legacy=legacy,
            round_number=round_number,
            sleep=self.sleep,
        )

    def load(self, key: TaskKey) -> SubmissionRecord | None:
        """The record under this store's key (re-attaching one on the legacy path); an unreadable one raises."""
        raw = self.accessor.get(self.record_key)
        if raw is None:
            return self._reattach_legacy(key)
        try:
            return SubmissionRecord.from_dict(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise SubmissionRecordError(
                f"The submission record in {self.location} for {key.relative_path()} is unreadable ({exc}). Compare "
                "it with the API's batch list (the REST API's task state store endpoints show it) and repair it, or "
                f"pass force_resubmit=True to submit anew on purpose. {DELETE_WARNING}"
            ) from exc

    def save(self, record: SubmissionRecord) -> None:
        """Store the record, never expiring (it must outlive the results' 29 days)."""
        self.accessor.set(self.record_key, record.to_dict(), retention=never_expire())

    def release(self, key: TaskKey, name: str, holder: str) -> None:
        """Give claim `name` back if `holder` holds it."""
        raw = self.accessor.get(self._claim_key(name))
        if raw is not None and Claim.from_dict(raw).holder == holder:
            self.accessor.delete(self._claim_key(name))

    def _claim_key(self, name: str) -> str:
        return f"{self.record_key}.claim.{name}"

    def claim(self, key: TaskKey, name: str, mine: Claim) -> Claim:
        """The holder of claim `name` (a settled claim: the store has no compare-and-set)."""
        claim_key = self._claim_key(name)

        def read() -> Claim | None:
            raw = self.accessor.get(claim_key)
            return Claim.from_dict(raw) if raw is not None else None

        def write(claim: Claim) -> None:
            self.accessor.set(claim_key, claim.to_dict(), retention=never_expire())

        return settled_claim(read, write, mine, self.settle_seconds, self.sleep)

    def _reattach_legacy(self, key: TaskKey) -> SubmissionRecord | None:
        if self.legacy is None:
            return None
        record = self.legacy.load(key)
        if record is not None:
            log.warning(
                "Re-attaching the submission record found at %s (written before records moved to the task "
                "state store); it is kept in the store from now on",
                self.legacy.path(key),
            )
            self.save(record)
        return record


def open_record_store(
    *,
    state_path: str | ObjectStoragePath | None,
    storage_conn_id: str | None,
    context: Context | None,
    settle_seconds: float,
) -> RecordStore:
    """The record store for this task instance, by `choose_record_home`; raises before any API call."""
    from airflow_provider_claude_batch._compat import conf
    from airflow_provider_claude_batch.storage import as_path
    from airflow_provider_claude_batch.submit.path_store import PathRecordStore

    explicit = state_path or conf.get("claude_batch", "state_path", fallback=None)
    accessor = context.get("task_state_store") if context is not None else None
    home = choose_record_home(
        state_path=str(explicit) if explicit else None,
        store_available=accessor is not None,
        clear_on_success=conf.getboolean("state_store", "clear_on_success", fallback=False),
        executor=str(conf.get("core", "executor", fallback="LocalExecutor")),
    )
    if home == "path" and explicit:
        return PathRecordStore(as_path(explicit, storage_conn_id), settle_seconds=settle_seconds)
    local = PathRecordStore(as_path(local_default_path()), settle_seconds=settle_seconds)
    if home == "local_disk" or accessor is None:
        return local
    return TaskStateRecordStore(accessor, settle_seconds=settle_seconds, legacy=local)


def local_default_path() -> str:
    """The local-disk default under AIRFLOW_HOME (where every record lived before the task state store)."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    return "file://" + os.path.join(os.path.abspath(home), "claude_batch", "submissions")
