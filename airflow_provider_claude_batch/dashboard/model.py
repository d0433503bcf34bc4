"""The view's rows, from what this provider records and one List page per connection. Pure.

Inputs: the batches our tasks created (each submit task's `submission_record` XCom), the landings
(each results task's summary: its batch IDs, counts, tokens, dollars) and, per Claude connection,
the newest page of the List endpoint (or why it could not be read). Output: per connection, the
batches in flight, the runs landed with a daily spend chart, and the batches at risk (ended, never
landed, counting down to the 29-day archive), oldest first.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.defaults import BATCH_LIFETIME
from airflow_provider_claude_batch.results.checks import RESULTS_RETENTION_SECONDS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from airflow_provider_claude_batch.submit.record import TaskKey
    from airflow_provider_claude_batch.wait.listing import ListedBatch

DAY = 86400.0
CHART_DAYS = 30
RECENT_RUNS = 50
# A listed batch in one of these has not ended yet.
UNENDED = frozenset({"in_progress", "canceling"})
UNLISTED = ""


def task_url(task: TaskKey) -> str:
    """The task instance's page in Airflow's UI (relative to the site root)."""
    parts = ["dags", task.dag_id, "runs", task.run_id, "tasks", task.task_id]
    if task.map_index >= 0:
        parts += ["mapped", str(task.map_index)]
    return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


@dataclass(frozen=True)
class Submitted:
    """One batch one of our tasks created (from its submission record)."""

    task: TaskKey
    batch_id: str
    requests: int
    created_at: float


@dataclass(frozen=True)
class Landed:
    """One landing: a results task's summary (what the manifest says it wrote and what it cost)."""

    # The landing task, when it landed, where, from which batches;
    task: TaskKey
    landed_at: float
    output_path: str
    batch_ids: tuple[str, ...]
    # what the manifest counted,
    requests: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    # and what it cost, at the dated price table: every token at the batch and the standard price, what
    # was paid (requests sent through the Messages API by a deadline at the standard price) and saved;
    batch_usd: float
    standard_usd: float
    savings_usd: float
    paid_usd: float
    # how many requests went through the Messages API (a deadline's fallback or route="sync").
    sync_requests: int = 0


@dataclass(frozen=True)
class Listing:
    """One connection's newest List page, or why it could not be read (then `batches` is empty)."""

    conn_id: str
    batches: Mapping[str, ListedBatch] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class InFlight:
    """A batch that has not ended: how far it got and how long it has before the 24-hour expiry."""

    task: TaskKey
    batch_id: str
    status: str
    requests: int
    done: int
    age_seconds: float
    expires_in_seconds: float
    console_url: str


@dataclass(frozen=True)
class AtRisk:
    """A batch that ended but that no landing of ours has recorded: its results go at the archive."""

    task: TaskKey
    batch_id: str
    status: str
    requests: int
    ended_at: float | None
    created_at: float
    days_left: float
    console_url: str


@dataclass(frozen=True)
class Day:
    """One day's landings: dollars paid (the batch price, plus the standard price of requests a deadline
    sent through the Messages API) and saved against the standard price.
    """

    day: str
    paid_usd: float
    savings_usd: float


@dataclass(frozen=True)
class ConnectionView:
    """What the view shows for one Claude connection (`conn_id` "" holds batches no listing had)."""

    conn_id: str
    api_error: str | None
    in_flight: list[InFlight]
    at_risk: list[AtRisk]
    landed: list[Landed]
    daily: list[Day]


@dataclass(frozen=True)
class Dashboard:
    """The whole view at `generated_at`."""

    generated_at: float
    connections: list[ConnectionView]


def submitted_from_record(task: TaskKey, record: object) -> list[Submitted]:
    """The created batches of a `submission_record` XCom value; [] for anything not shaped like one."""
    if not isinstance(record, dict):
        return []
    out = []
    for part in record.get("parts") or ():
        if isinstance(part, dict) and isinstance(part.get("batch_id"), str):
            created = part.get("created_at") or part.get("intent_at") or record.get("created_at") or 0.0
            out.append(Submitted(task, part["batch_id"], int(part.get("request_count") or 0), float(created)))
    return out


def submitted_from_ids(task: TaskKey, batch_ids: object, published_at: float) -> list[Submitted]:
    """Batches from a `batch_ids` XCom (what the one-task operator publishes instead of a record);
    requests and creation time come from the listing when it holds them.
    """
    if not isinstance(batch_ids, list):
        return []
    return [Submitted(task, batch_id, 0, published_at) for batch_id in batch_ids if isinstance(batch_id, str)]


def landed_from_summary(task: TaskKey, summary: object, landed_at: float) -> Landed | None:
    """A landing from a results task's return value (the manifest summary); None if it is not one."""
    if not isinstance(summary, dict) or not isinstance(summary.get("cost"), dict):
        return None
    ids = summary.get("batch_ids")
    if not isinstance(ids, list):
        return None
    usage: Mapping[str, Any] = summary.get("usage_total") or {}
    cost: Mapping[str, Any] = summary["cost"]
    standard = float(cost.get("standard_usd") or 0.0)
    # A landing with routes says what it paid; one without paid the batch price for every token.
    paid = float(cost["paid_usd"]) if "paid_usd" in cost else float(cost.get("batch_usd") or 0.0)
    savings = standard - paid if "paid_usd" in cost else float(cost.get("savings_usd") or 0.0)
    sync: Mapping[str, Any] = (summary.get("routes") or {}).get("sync") or {}
    return Landed(
        task=task,
        landed_at=landed_at,
        output_path=str(summary.get("output_path") or ""),
        batch_ids=tuple(str(i) for i in ids),
        requests=int(summary.get("requests") or 0),
        failed=int(summary.get("failed") or 0),
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=int(usage.get("cache_read_tokens") or 0),
        cache_write_tokens=int(usage.get("cache_write_5m_tokens") or 0) + int(usage.get("cache_write_1h_tokens") or 0),
        batch_usd=float(cost.get("batch_usd") or 0.0),
        standard_usd=standard,
        savings_usd=round(savings, 6),
        paid_usd=paid,
        sync_requests=int(sync.get("requests") or 0),
    )


def build_dashboard(
    submitted: Iterable[Submitted],
    landed: Iterable[Landed],
    listings: Sequence[Listing],
    *,
    now: float,
    console_url: str,
) -> Dashboard:
    """Sort every batch into in flight, at risk or landed, under the connection whose listing holds it.

    A batch no listing holds goes to the only connection when there is one (else to the group ""):
    younger than 24 hours it counts as in flight (status "unknown"), older it has surely ended.
    """
    owner: dict[str, str] = {}
    for listing in listings:
        for batch_id in listing.batches:
            owner.setdefault(batch_id, listing.conn_id)
    fallback = listings[0].conn_id if len(listings) == 1 else UNLISTED
    listed: dict[str, ListedBatch] = {}
    for listing in listings:
        listed.update(listing.batches)

    runs = sorted(landed, key=lambda r: r.landed_at, reverse=True)
    landed_ids = {batch_id for run in runs for batch_id in run.batch_ids}
    in_flight: dict[str, list[InFlight]] = defaultdict(list)
    at_risk: dict[str, list[AtRisk]] = defaultdict(list)
    seen: set[str] = set()
    for batch in submitted:
        if batch.batch_id in seen or batch.batch_id in landed_ids:
            continue
        seen.add(batch.batch_id)
        conn = owner.get(batch.batch_id, fallback)
        link = console_url.format(batch_id=batch.batch_id)
        row = _classify(batch, listed.get(batch.batch_id), now, link)
        if isinstance(row, InFlight):
            in_flight[conn].append(row)
        elif row is not None:
            at_risk[conn].append(row)

    runs_by_conn: dict[str, list[Landed]] = defaultdict(list)
    for run in runs:
        conn = next((owner[i] for i in run.batch_ids if i in owner), fallback)
        runs_by_conn[conn].append(run)

    names = [listing.conn_id for listing in listings]
    errors = {listing.conn_id: listing.error for listing in listings}
    extra = (set(in_flight) | set(at_risk) | set(runs_by_conn)) - set(names)
    views = []
    for conn in names + sorted(extra):
        views.append(
            ConnectionView(
                conn_id=conn,
                api_error=errors.get(conn),
                in_flight=sorted(in_flight[conn], key=lambda r: r.age_seconds, reverse=True),
                at_risk=sorted(at_risk[conn], key=lambda r: r.created_at),
                landed=runs_by_conn[conn][:RECENT_RUNS],
                daily=daily_spend(runs_by_conn[conn], now),
            )
        )
    return Dashboard(generated_at=now, connections=views)


def _classify(batch: Submitted, listed: ListedBatch | None, now: float, console_url: str) -> InFlight | AtRisk | None:
    # The API's creation time when it is listed (a record has the same; a one-task operator's pushed
    # batch IDs only say when they were published).
    created = listed.created_at.timestamp() if listed is not None else batch.created_at
    age = now - created
    if listed is not None:
        counts = listed.request_counts
        total = sum(counts.values()) or batch.requests
        status = listed.processing_status
        if status in UNENDED:
            done = total - counts.get("processing", 0)
            expires = created + BATCH_LIFETIME - now
            return InFlight(batch.task, batch.batch_id, status, total, done, age, expires, console_url)
        ended_at = listed.ended_at.timestamp() if listed.ended_at is not None else None
    elif age < BATCH_LIFETIME:
        return InFlight(
            batch.task, batch.batch_id, "unknown", batch.requests, 0, age, BATCH_LIFETIME - age, console_url
        )
    else:
        total, status, ended_at = batch.requests, "ended", None
    days_left = (created + RESULTS_RETENTION_SECONDS - now) / DAY
    if days_left <= 0:
        return None  # archived: nothing left to land
    return AtRisk(batch.task, batch.batch_id, status, total, ended_at, created, days_left, console_url)


def daily_spend(runs: Iterable[Landed], now: float, days: int = CHART_DAYS) -> list[Day]:
    """Dollars paid and saved per UTC day over the last `days` days (oldest first, zeros kept)."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    spent: dict[dt.date, list[float]] = {first + dt.timedelta(days=i): [0.0, 0.0] for i in range(days)}
    for run in runs:
        day = dt.datetime.fromtimestamp(run.landed_at, dt.UTC).date()
        if day in spent:
            spent[day][0] += run.paid_usd
            spent[day][1] += run.savings_usd
    return [Day(d.isoformat(), round(v[0], 6), round(v[1], 6)) for d, v in spent.items()]
