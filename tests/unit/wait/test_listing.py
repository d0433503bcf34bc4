"""The shared poller's decisions, without a network: list or retrieve, coalescing, when paging stops."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from airflow_provider_claude_batch.wait.events import BatchSnapshot, snapshot
from airflow_provider_claude_batch.wait.listing import (
    LIST_THRESHOLD,
    MAX_COALESCE_SECONDS,
    ListedBatch,
    ListingScan,
    ListPage,
    answer_for,
    coalesce_patience,
    decode_page,
    oldest_known,
    page_cap,
    use_listing,
)
from airflow_provider_claude_batch.wait.tracker import WaitTracker

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def listed(batch_id: str, age_hours: float = 1.0) -> ListedBatch:
    return ListedBatch(
        batch_id,
        "in_progress",
        {"processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
        NOW - timedelta(hours=age_hours),
    )


def page(*batches: ListedBatch, has_more: bool = True) -> ListPage:
    return ListPage(list(batches), has_more, batches[-1].id if batches else None)


def test_a_cycle_lists_only_when_enough_batches_are_wanted_and_pages_are_capped_by_their_number() -> None:
    assert not use_listing(1) and not use_listing(LIST_THRESHOLD - 1)
    assert use_listing(LIST_THRESHOLD) and use_listing(1000)
    assert page_cap(LIST_THRESHOLD) == 1
    assert page_cap(1000) == 1000 // LIST_THRESHOLD


def test_a_poll_waits_for_others_a_fifth_of_its_delay_at_most_ten_seconds() -> None:
    assert coalesce_patience(2.0) == pytest.approx(0.4)
    assert coalesce_patience(30.0) == pytest.approx(6.0)
    assert coalesce_patience(300.0) == MAX_COALESCE_SECONDS
    assert coalesce_patience(0.0) == 0.0
    # triggers that slept a jittered 90-100% of the same delay all fall inside the first one's patience
    rng = random.Random(3)
    wake_ups = [rng.uniform(0.9, 1.0) * 30.0 for _ in range(1000)]
    assert max(wake_ups) - min(wake_ups) <= coalesce_patience(min(wake_ups))


def test_paging_stops_once_every_wanted_batch_is_found() -> None:
    scan = ListingScan(frozenset({"b", "d"}), NOW.timestamp(), max_pages=10)
    assert scan.feed(page(listed("a"), listed("b"))) is True
    assert scan.feed(page(listed("c"), listed("d"))) is False
    assert set(scan.found) == {"b", "d"} and scan.missing() == [] and scan.pages == 2


def test_paging_stops_at_the_last_page_and_at_the_page_cap() -> None:
    last = ListingScan(frozenset({"x"}), NOW.timestamp(), max_pages=10)
    assert last.feed(page(listed("a"), has_more=False)) is False
    assert last.missing() == ["x"]
    capped = ListingScan(frozenset({"x"}), NOW.timestamp(), max_pages=2)
    assert capped.feed(page(listed("a"))) is True
    assert capped.feed(page(listed("b"))) is False


def test_paging_stops_past_the_oldest_wanted_batch_or_past_a_batch_lifetime() -> None:
    now = NOW.timestamp()
    known = ListingScan(frozenset({"x"}), now, max_pages=10, oldest_wanted=now - 2 * 3600)
    assert known.feed(page(listed("a", 1.0), listed("b", 1.5))) is True
    assert known.feed(page(listed("c", 1.9), listed("d", 2.1))) is False
    unknown = ListingScan(frozenset({"x"}), now, max_pages=10)
    assert unknown.feed(page(listed("a", 2.0), listed("b", 24.5))) is True  # within 24 h + 1 h margin
    assert unknown.feed(page(listed("c", 25.5))) is False


def test_the_oldest_creation_time_is_known_only_if_every_batch_was_seen() -> None:
    assert oldest_known(["a", "b"], {"a": 5.0, "b": 3.0, "c": 1.0}) == 3.0
    assert oldest_known(["a", "z"], {"a": 5.0}) is None


def test_a_listed_batch_gives_the_same_snapshot_as_the_sdk_object() -> None:
    body = msgspec.json.encode(
        {
            "data": [
                {
                    "id": "msgbatch_1",
                    "type": "message_batch",
                    "processing_status": "ended",
                    "request_counts": {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0},
                    "created_at": "2026-11-22T10:00:00.123456Z",
                    "expires_at": "2026-11-23T10:00:00.123456Z",
                    "ended_at": "2026-11-22T11:00:00Z",
                    "archived_at": None,
                    "cancel_initiated_at": None,
                    "results_url": "https://example/results",
                    "a_field_added_later": {"x": 1},
                }
            ],
            "has_more": False,
            "first_id": "msgbatch_1",
            "last_id": "msgbatch_1",
        }
    )
    from anthropic.types.messages import MessageBatch

    (batch,) = decode_page(body).data
    sdk_batch = MessageBatch.model_validate(msgspec.json.decode(body)["data"][0])
    assert batch.snapshot() == snapshot(sdk_batch)


def test_a_page_not_shaped_like_the_api_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_page(b'{"data": [{"id": 1}]}')


def shot(batch_id: str) -> BatchSnapshot:
    return BatchSnapshot(batch_id, "in_progress", {"processing": 1})


def test_each_trigger_gets_its_own_batches_or_the_error_one_of_them_met() -> None:
    found = {"a": shot("a"), "b": shot("b")}
    failure = RuntimeError("429")
    assert answer_for(["b", "a"], found, {}) == [found["b"], found["a"]]
    assert answer_for(["a", "c"], found, {"c": failure}) is failure
    assert isinstance(answer_for(["a", "z"], found, {}), LookupError)


def test_progress_is_logged_when_something_changed_or_every_so_often() -> None:
    tracker = WaitTracker(["a"], 10_000.0, 30.0, 300.0, 3600.0, 0.0)
    tracker.after_success([shot("a")], 0.0)
    assert tracker.progress_due(0.0, 600.0)
    tracker.after_success([shot("a")], 30.0)
    assert not tracker.progress_due(30.0, 600.0)
    assert tracker.progress_due(600.0, 600.0)
    tracker.after_success([BatchSnapshot("a", "ended", {"succeeded": 1})], 630.0)
    assert tracker.progress_due(630.0, 600.0)
