"""The submission record and the queue arithmetic: pure."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.plan import plan_batches
from airflow_provider_claude_batch.submit.queue import QueueTally, fits, listing_can_stop
from airflow_provider_claude_batch.submit.record import PartRecord, SubmissionRecord, TaskKey, matches_part
from tests.helpers import make_requests


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
