"""Poll delays, the wait tracker and its events: pure."""

from __future__ import annotations

import random

import pytest

from airflow_provider_claude_batch.wait.events import BatchSnapshot, WaitOutcome
from airflow_provider_claude_batch.wait.tracker import WaitTracker, next_poll_delay, progress_line


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
