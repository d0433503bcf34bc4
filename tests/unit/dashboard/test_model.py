"""The view's rows: what is in flight, what is at risk, what landed, from records, summaries and a List page."""

from __future__ import annotations

import datetime as dt

from airflow_provider_claude_batch.dashboard.model import (
    DAY,
    Listing,
    build_dashboard,
    daily_spend,
    landed_from_summary,
    submitted_from_ids,
    submitted_from_record,
    task_url,
)
from airflow_provider_claude_batch.submit.record import PartRecord, SubmissionRecord, TaskKey
from airflow_provider_claude_batch.wait.listing import ListedBatch

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC).timestamp()
CONSOLE = "https://console.example/batches/{batch_id}"
TASK = TaskKey("nightly", "submit", "scheduled__2026-12-06")


def record(*parts: tuple[str, int, float]) -> dict[str, object]:
    """A real SubmissionRecord's XCom value with these (batch_id, requests, created_at) parts."""
    made = tuple(
        PartRecord(
            index=i, request_count=n, body_bytes=100, first_custom_id="a", last_custom_id="z", batch_id=b, created_at=c
        )
        for i, (b, n, c) in enumerate(parts)
    )
    return SubmissionRecord(TASK, "fp", made, NOW, NOW).to_dict()


def listed(batch_id: str, status: str, created_at: float, **counts: int) -> ListedBatch:
    ended = dt.datetime.fromtimestamp(created_at + 3600, dt.UTC) if status == "ended" else None
    return ListedBatch(
        id=batch_id,
        processing_status=status,
        request_counts={"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0, **counts},
        created_at=dt.datetime.fromtimestamp(created_at, dt.UTC),
        ended_at=ended,
    )


def summary(batch_ids: list[str], batch_usd: float, savings_usd: float) -> dict[str, object]:
    return {
        "output_path": "s3://out/2026-12-06/",
        "requests": 10,
        "counts": {"succeeded": 9, "errored": 1},
        "failed": 1,
        "failed_fraction": 0.1,
        "usage_total": {"input_tokens": 1000, "output_tokens": 50, "cache_read_tokens": 7, "cache_write_5m_tokens": 3},
        "cost": {"batch_usd": batch_usd, "standard_usd": batch_usd + savings_usd, "savings_usd": savings_usd},
        "batch_ids": batch_ids,
    }


def test_a_submission_record_gives_its_created_batches_and_skips_a_part_still_being_created() -> None:
    value = record(("msgbatch_a", 5, NOW - 60), ("msgbatch_b", 3, NOW - 30))
    value["parts"].append({"index": 2, "request_count": 4, "intent_at": NOW, "batch_id": None})  # type: ignore[attr-defined]
    rows = submitted_from_record(TASK, value)
    assert [(r.batch_id, r.requests, r.created_at) for r in rows] == [
        ("msgbatch_a", 5, NOW - 60),
        ("msgbatch_b", 3, NOW - 30),
    ]
    assert submitted_from_record(TASK, "not a record") == []
    assert submitted_from_record(TASK, ["msgbatch_a"]) == []


def test_a_landing_summary_gives_counts_tokens_and_dollars_and_anything_else_is_not_a_landing() -> None:
    run = landed_from_summary(TASK, summary(["msgbatch_a"], 0.5, 0.5), NOW)
    assert run is not None
    assert (run.requests, run.failed, run.input_tokens, run.output_tokens) == (10, 1, 1000, 50)
    assert (run.cache_read_tokens, run.cache_write_tokens) == (7, 3)
    assert (run.batch_usd, run.paid_usd, run.standard_usd, run.savings_usd, run.sync_requests) == (
        0.5,
        0.5,
        1.0,
        0.5,
        0,
    )
    assert landed_from_summary(TASK, ["msgbatch_a"], NOW) is None  # a submit task's return value
    assert landed_from_summary(TASK, {"cost": {}}, NOW) is None


def test_a_landing_with_a_deadlines_messages_api_round_shows_what_it_paid_and_saved() -> None:
    landing = summary(["msgbatch_a"], 0.5, 0.5)
    landing["cost"] |= {"paid_usd": 0.6, "batch_only_usd": 0.5, "deadline_premium_usd": 0.1}  # type: ignore[operator]
    landing["routes"] = {"batch": {"requests": 8}, "sync": {"requests": 2}}
    run = landed_from_summary(TASK, landing, NOW)
    assert run is not None
    assert (run.batch_usd, run.paid_usd, run.savings_usd, run.sync_requests) == (0.5, 0.6, 0.4, 2)
    (day,) = [d for d in daily_spend([run], NOW) if d.paid_usd]
    assert (day.paid_usd, day.savings_usd) == (0.6, 0.4)  # the chart shows what was paid


def test_each_batch_is_in_flight_at_risk_or_landed_and_at_risk_is_oldest_first() -> None:
    submitted = submitted_from_record(
        TASK,
        record(
            ("msgbatch_running", 10, NOW - 2 * 3600),
            ("msgbatch_ended_new", 4, NOW - 2 * DAY),
            ("msgbatch_ended_old", 4, NOW - 20 * DAY),
            ("msgbatch_landed", 4, NOW - DAY),
            ("msgbatch_archived", 4, NOW - 30 * DAY),
        ),
    )
    listing = Listing(
        "claude_batch_default",
        {
            "msgbatch_running": listed("msgbatch_running", "in_progress", NOW - 2 * 3600, processing=6, succeeded=4),
            "msgbatch_ended_new": listed("msgbatch_ended_new", "ended", NOW - 2 * DAY, succeeded=4),
            "msgbatch_landed": listed("msgbatch_landed", "ended", NOW - DAY, succeeded=4),
        },
    )
    runs = [landed_from_summary(TaskKey("nightly", "land", "r"), summary(["msgbatch_landed"], 1.0, 1.0), NOW - 3600)]
    board = build_dashboard(submitted, [r for r in runs if r], [listing], now=NOW, console_url=CONSOLE)
    (view,) = board.connections
    assert view.conn_id == "claude_batch_default" and view.api_error is None
    (flying,) = view.in_flight
    assert (flying.batch_id, flying.status, flying.done, flying.requests) == ("msgbatch_running", "in_progress", 4, 10)
    assert flying.expires_in_seconds == 22 * 3600
    assert flying.console_url == "https://console.example/batches/msgbatch_running"
    # Not in the listing but older than 24 hours: it has ended. Archived (29 days): nothing to save.
    assert [(r.batch_id, r.status) for r in view.at_risk] == [
        ("msgbatch_ended_old", "ended"),
        ("msgbatch_ended_new", "ended"),
    ]
    assert [round(r.days_left) for r in view.at_risk] == [9, 27]
    assert [r.batch_ids for r in view.landed] == [("msgbatch_landed",)]


def test_an_unreachable_api_leaves_young_batches_in_flight_as_unknown_and_says_why() -> None:
    submitted = submitted_from_record(TASK, record(("msgbatch_young", 7, NOW - 600)))
    board = build_dashboard(
        submitted,
        [],
        [Listing("claude_batch_default", error="network APIConnectionError")],
        now=NOW,
        console_url=CONSOLE,
    )
    (view,) = board.connections
    assert view.api_error == "network APIConnectionError"
    (row,) = view.in_flight
    assert (row.status, row.requests, row.done) == ("unknown", 7, 0)


def test_batches_go_under_the_connection_whose_listing_holds_them() -> None:
    submitted = submitted_from_record(
        TASK, record(("msgbatch_us", 1, NOW - 60), ("msgbatch_eu", 1, NOW - 60), ("msgbatch_x", 1, NOW - 60))
    )
    listings = [
        Listing("us", {"msgbatch_us": listed("msgbatch_us", "in_progress", NOW - 60, processing=1)}),
        Listing("eu", {"msgbatch_eu": listed("msgbatch_eu", "in_progress", NOW - 60, processing=1)}),
    ]
    board = build_dashboard(submitted, [], listings, now=NOW, console_url=CONSOLE)
    assert {v.conn_id: [r.batch_id for r in v.in_flight] for v in board.connections} == {
        "us": ["msgbatch_us"],
        "eu": ["msgbatch_eu"],
        "": ["msgbatch_x"],
    }


def test_the_task_link_points_at_the_task_instance_in_the_airflow_ui() -> None:
    assert task_url(TaskKey("d", "t", "manual__2026-12-06T00:00:00+00:00")) == (
        "/dags/d/runs/manual__2026-12-06T00%3A00%3A00%2B00%3A00/tasks/t"
    )
    assert task_url(TaskKey("d", "t", "r", 3)) == "/dags/d/runs/r/tasks/t/mapped/3"


def test_daily_spend_covers_thirty_days_with_zeros_and_sums_each_day() -> None:
    runs = [
        landed_from_summary(TASK, summary(["a"], 1.0, 1.0), NOW - 3600),
        landed_from_summary(TASK, summary(["b"], 0.5, 0.25), NOW - 7200),
        landed_from_summary(TASK, summary(["c"], 9.0, 9.0), NOW - 40 * DAY),
    ]
    days = daily_spend([r for r in runs if r], NOW)
    assert len(days) == 30 and days[-1].day == "2026-12-07" and days[0].day == "2026-11-08"
    assert (days[-1].paid_usd, days[-1].savings_usd) == (1.5, 1.25)
    assert sum(d.paid_usd for d in days[:-1]) == 0


def test_a_one_task_operators_published_ids_are_tracked_with_the_listings_counts_and_creation_time() -> None:
    one_task = TaskKey("eval", "claude_batch", "r")
    submitted = submitted_from_ids(one_task, ["msgbatch_r1", 7], published_at=NOW - 60)
    assert [(b.batch_id, b.requests) for b in submitted] == [("msgbatch_r1", 0)]
    assert submitted_from_ids(one_task, {"not": "ids"}, NOW) == []
    listing = Listing("c", {"msgbatch_r1": listed("msgbatch_r1", "in_progress", NOW - 3 * 3600, processing=5)})
    (view,) = build_dashboard(submitted, [], [listing], now=NOW, console_url=CONSOLE).connections
    (row,) = view.in_flight
    assert (row.task, row.requests, row.age_seconds, row.expires_in_seconds) == (one_task, 5, 3 * 3600, 21 * 3600)
