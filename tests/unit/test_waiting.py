"""Polling decisions, the wait tracker, events, the submission record and queue arithmetic: pure."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.plan import plan_batches
from airflow_provider_claude_batch.submit.queue import QueueTally, fits, listing_can_stop
from airflow_provider_claude_batch.submit.record import PartRecord, SubmissionRecord, TaskKey, matches_part
from airflow_provider_claude_batch.wait.events import BatchSnapshot, WaitOutcome
from airflow_provider_claude_batch.wait.polling import ErrorBudget, classify_status, next_poll_delay, progress_line
from airflow_provider_claude_batch.wait.tracker import WaitTracker
from tests.helpers import make_requests


def shot(batch_id: str, status: str = "in_progress", canceled: bool = False) -> BatchSnapshot:
    counts = {"processing": 2, "succeeded": 0} if status != "ended" else {"processing": 0, "succeeded": 2}
    return BatchSnapshot(
        batch_id,
        status,
        counts,
        "2026-01-01T00:00:00+00:00",
        cancel_initiated_at="2026-01-01T01:00:00+00:00" if canceled else None,
    )


def tracker(**overrides: object) -> WaitTracker:
    settings: dict[str, object] = {
        "batch_ids": ["a", "b"],
        "deadline": 10_000.0,
        "poll_interval": 30.0,
        "max_poll_interval": 300.0,
        "error_budget": 3600.0,
        "started_at": 0.0,
        "rng": random.Random(1),
    }
    settings.update(overrides)
    return WaitTracker(**settings)  # type: ignore[arg-type]


def test_polling_starts_at_the_interval_and_backs_off_for_old_batches_with_jitter() -> None:
    rng = random.Random(7)
    early = [next_poll_delay(30, 300, 60, rng) for _ in range(50)]
    assert all(27 <= d <= 30 for d in early) and len(set(early)) > 1
    assert 27 * 2 <= next_poll_delay(30, 300, 3600 + 1800, rng) <= 60
    assert next_poll_delay(30, 300, 20 * 3600, rng) <= 300


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (None, "transient"),
        (408, "transient"),
        (409, "transient"),
        (429, "transient"),
        (500, "transient"),
        (503, "transient"),
        (529, "transient"),
        (400, "fatal"),
        (401, "fatal"),
        (403, "fatal"),
        (404, "fatal"),
    ],
)
def test_only_errors_that_waiting_cannot_fix_are_fatal(status: int | None, kind: str) -> None:
    assert classify_status(status) == kind


def test_the_error_budget_counts_a_run_of_failures_and_resets_on_success() -> None:
    budget = ErrorBudget(100)
    budget.record_failure(0)
    budget.record_failure(60)
    assert not budget.exhausted(99)
    assert budget.exhausted(100)
    budget.record_success()
    assert not budget.exhausted(1000)
    assert budget.retry_delay(7.5, 30) == 7.5
    assert 0 < budget.retry_delay(None, 30, random.Random(1)) <= 120


def test_the_tracker_finishes_when_every_batch_has_ended_and_polls_only_pending_ones() -> None:
    t = tracker()
    decision = t.after_success([shot("a", "ended"), shot("b")], now=10)
    assert decision.action == "sleep" and 27 <= decision.delay <= 30
    assert t.pending() == ["b"]
    done = t.after_success([shot("b", "ended")], now=40)
    assert done.action == "finish" and done.outcome is not None
    assert done.outcome.status == "ended" and set(done.outcome.batches) == {"a", "b"}


def test_the_tracker_rides_out_transient_errors_until_the_budget_is_spent() -> None:
    t = tracker(error_budget=100.0)
    first = t.after_error(529, None, "529 overloaded_error", now=0)
    assert first.action == "sleep"
    assert t.after_error(429, 12.0, "429", now=50).delay == 12.0
    spent = t.after_error(500, None, "500 api_error", now=100)
    assert spent.outcome is not None and spent.outcome.status == "error"
    assert spent.outcome.error_kind == "unavailable" and "left running" in spent.outcome.message


def test_the_tracker_stops_at_once_on_fatal_errors_and_at_the_deadline() -> None:
    fatal = tracker().after_error(401, None, "401 authentication_error", now=0)
    assert fatal.outcome is not None and fatal.outcome.error_kind == "refused"
    assert tracker(deadline=5.0).before_poll(5.0).outcome.status == "timeout"  # type: ignore[union-attr]
    assert tracker(deadline=50.0).after_success([shot("a")], now=40).delay <= 10


def test_progress_lines_count_states_and_requests() -> None:
    line = progress_line(
        {"a": "ended", "b": "in_progress"},
        {"a": {"succeeded": 3, "errored": 1, "processing": 0}, "b": {"processing": 4}},
        125,
    )
    assert (
        line == "2 batch(es): 1 ended, 1 in_progress; 8 requests (errored 1, processing 4, succeeded 3); "
        "50% done; waiting 2.1 min"
    )


def test_events_round_trip_and_refuse_garbage() -> None:
    outcome = WaitOutcome("ended", ["a"], {"a": shot("a", "ended", canceled=True)}, "done")
    again = WaitOutcome.from_payload(outcome.to_payload())
    assert again == outcome and again.batches["a"].canceled
    for garbage in (
        None,
        "success",
        {"status": "weird", "batch_ids": []},
        {"status": "ended"},
        {"status": "error", "batch_ids": ["a"], "error_kind": "cosmic"},
    ):
        with pytest.raises(ValueError, match="wait trigger"):
            WaitOutcome.from_payload(garbage)


def test_the_submission_record_round_trips_and_tracks_intent_and_ids() -> None:
    prepared, _, _ = prepare_requests(list(enumerate(make_requests(5), 1)))
    plans = plan_batches(prepared, max_requests=2)
    key = TaskKey("dag", "task", "scheduled__2026-01-01T00:00:00+00:00", 3)
    record = SubmissionRecord.new(key, prepared.fingerprint, plans, prepared.custom_ids, now=1.0, attempt_id="t1")
    assert [(p.first_custom_id, p.last_custom_id, p.request_count) for p in record.parts] == [
        ("req-0", "req-1", 2),
        ("req-2", "req-3", 2),
        ("req-4", "req-4", 1),
    ]
    record = record.with_intent(1, 5.0).with_batch(1, "msgbatch_1", 6.0)
    assert record.batch_ids == ["msgbatch_1"] and not record.complete
    assert SubmissionRecord.from_json(record.to_json()) == record
    assert key.relative_path() == "dag/scheduled__2026-01-01T00%3A00%3A00%2B00%3A00/task.3"


def test_a_listed_batch_matches_a_lost_create_only_by_count_time_and_not_claimed() -> None:
    part = PartRecord(0, 3, 100, "a", "c", intent_at=1000.0)
    assert matches_part(part, request_total=3, created_at=1001, since=700, claimed=[], batch_id="x")
    assert not matches_part(part, request_total=4, created_at=1001, since=700, claimed=[], batch_id="x")
    assert not matches_part(part, request_total=3, created_at=600, since=700, claimed=[], batch_id="x")
    assert not matches_part(part, request_total=3, created_at=1001, since=700, claimed=["x"], batch_id="x")


def test_queue_arithmetic() -> None:
    now = 30 * 3600.0
    listed = [
        _listed("in_progress", 5, now - 60),
        _listed("canceling", 2, now - 120),
        _listed("ended", 0, now - 180),
        _listed("in_progress", 9, now - 26 * 3600),  # older than a batch can live: the listing stops here
        _listed("in_progress", 11, now - 27 * 3600),
    ]
    tally = QueueTally(now)
    read = [tally.add(batch) for batch in listed]
    assert tally.total == 7 and read == [True, True, True, False, False]
    assert fits(7, 3, 10) and not fits(8, 3, 10)
    assert listing_can_stop(created_at=0, now=26 * 3600) and not listing_can_stop(created_at=0, now=3600)


def _listed(status: str, processing: int, created_at: float) -> SimpleNamespace:
    return SimpleNamespace(
        processing_status=status,
        created_at=datetime.fromtimestamp(created_at, tz=UTC),
        request_counts=SimpleNamespace(processing=processing),
    )
