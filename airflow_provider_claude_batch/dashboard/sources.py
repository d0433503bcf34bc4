"""Where the view's data comes from: XCom rows in Airflow's metadata database (our submission records
and landing summaries, for the DAGs the user may read) and one List page per Claude connection.

The List call is cached for a short time and never waited on for longer than a timeout: a slow or
unreachable API leaves the last page read (or none) and a note saying so, and the call that is still
running fills the cache for the next refresh.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.dashboard.model import (
    CHART_DAYS,
    DAY,
    Landed,
    Listing,
    Submitted,
    landed_from_summary,
    submitted_from_ids,
    submitted_from_record,
)
from airflow_provider_claude_batch.submit.record import TaskKey

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from airflow_provider_claude_batch.wait.listing import ListedBatch

SUBMISSION_RECORD_KEY = "submission_record"
SUMMARY_KEY = "return_value"
BATCH_IDS_KEY = "batch_ids"
LIST_LIMIT = 1000
# Records are read this far back: a batch's results are archived 29 days after it was created.
WINDOW_SECONDS = max(CHART_DAYS, 30) * DAY


def read_tracked(dag_ids: Iterable[str], now: float) -> tuple[list[Submitted], list[Landed]]:
    """Our batches and landings of the last 30 days, in these DAGs only.

    A batch is named by the task that created it: its submission record; a batch no record names
    (the one-task operator keeps its records in its own state) by the task that published its ID.
    Landing summaries are read only from tasks that published batch IDs: `return_value` is every
    task's key, and the other tasks' values are none of our business.
    """
    from airflow_provider_claude_batch._compat import xcom_rows

    since = now - WINDOW_SECONDS
    recorded: list[Submitted] = []
    published: list[Submitted] = []
    publishers: set[tuple[str, str, str, int]] = set()
    for dag_id, run_id, task_id, map_index, key, value, timestamp in xcom_rows(
        (SUBMISSION_RECORD_KEY, BATCH_IDS_KEY), set(dag_ids), since
    ):
        task = TaskKey(dag_id, task_id, run_id, map_index)
        if key == SUBMISSION_RECORD_KEY:
            recorded += submitted_from_record(task, value)
        else:
            published += submitted_from_ids(task, value, timestamp)
            publishers.add((dag_id, run_id, task_id, map_index))
    landed: list[Landed] = []
    if publishers:
        rows = xcom_rows((SUMMARY_KEY,), {p[0] for p in publishers}, since, task_ids={p[2] for p in publishers})
        for dag_id, run_id, task_id, map_index, _, value, timestamp in rows:
            if (dag_id, run_id, task_id, map_index) in publishers:
                run = landed_from_summary(TaskKey(dag_id, task_id, run_id, map_index), value, timestamp)
                if run is not None:
                    landed.append(run)
    named = {batch.batch_id for batch in recorded}
    return recorded + [batch for batch in published if batch.batch_id not in named], landed


def list_newest(conn_id: str, timeout: float) -> dict[str, ListedBatch]:
    """The connection's newest batches (one List call of up to 1,000), by ID. No retries: the cache is the retry."""
    import httpx2

    from airflow_provider_claude_batch.hooks.claude_batch import BATCHES_PATH, ClaudeBatchHook
    from airflow_provider_claude_batch.wait.listing import decode_page

    hook = ClaudeBatchHook(conn_id)
    try:
        client = hook.client.with_options(timeout=timeout, max_retries=0)
        response = client.get(BATCHES_PATH, cast_to=httpx2.Response, options={"params": {"limit": LIST_LIMIT}})
        page = decode_page(response.content)
    finally:
        hook.close()
    return {batch.id: batch for batch in page.data}


def describe_failure(exc: BaseException) -> str:
    """A short reason the List call failed, with anything secret-shaped masked."""
    from airflow_provider_claude_batch.hooks.api_errors import describe_api_error, mask_secrets

    return mask_secrets(describe_api_error(exc))


@dataclass
class _Entry:
    batches: Mapping[str, ListedBatch] = field(default_factory=dict)
    fetched_at: float = 0.0
    error: str | None = None
    running: Future[Mapping[str, ListedBatch]] | None = None


@dataclass
class ListingCache:
    """The newest List page of each connection, at most `ttl` seconds old, each call bounded by `timeout`."""

    ttl: float = 30.0
    timeout: float = 5.0
    fetch: Callable[[str, float], Mapping[str, ListedBatch]] = list_newest
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "claude-batch-list"))

    def listings(self, conn_ids: Iterable[str]) -> list[Listing]:
        """One `Listing` per connection: fresh when the API answered in time, else the last one and why."""
        conn_ids = list(conn_ids)
        started = {conn_id: self._start(conn_id) for conn_id in conn_ids}
        deadline = self.clock() + self.timeout
        out = []
        for conn_id in conn_ids:
            entry, future = self._entries[conn_id], started[conn_id]
            batches, error = entry.batches, entry.error
            if future is not None:
                try:
                    batches, error = future.result(timeout=max(0.0, deadline - self.clock())), None
                except FutureTimeout:
                    error = f"no answer within {self.timeout:g} s"
                except Exception as exc:
                    error = describe_failure(exc)
            out.append(Listing(conn_id, batches, error))
        return out

    def _start(self, conn_id: str) -> Future[Mapping[str, ListedBatch]] | None:
        with self._lock:
            entry = self._entries.setdefault(conn_id, _Entry())
            if entry.running is not None:
                return entry.running
            if entry.fetched_at and self.clock() - entry.fetched_at < self.ttl:
                return None
            future = self._pool.submit(self.fetch, conn_id, self.timeout)
            entry.running = future
        future.add_done_callback(lambda done: self._store(entry, done))
        return future

    def _store(self, entry: _Entry, done: Future[Mapping[str, ListedBatch]]) -> None:
        with self._lock:
            entry.running = None
            entry.fetched_at = self.clock()
            exc = done.exception()
            if exc is None:
                entry.batches, entry.error = done.result(), None
            else:
                entry.error = describe_failure(exc)
