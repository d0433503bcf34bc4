"""Batch lifecycle in the emulator's store, driven by its clock: no server, no waiting."""

from __future__ import annotations

import json

import msgspec
import pytest

from airflow_provider_claude_batch.emulator.faults import Fault, FaultPlan
from airflow_provider_claude_batch.emulator.store import BatchStore, EmulatorConfig
from airflow_provider_claude_batch.emulator.wire import ApiError
from tests.helpers import make_requests

V = "2026-10-21"
BASE = "http://emulator"


def _body(requests: list[dict[str, object]]) -> bytes:
    return json.dumps({"requests": requests}).encode()


@pytest.fixture
def store() -> BatchStore:
    return BatchStore(EmulatorConfig(processing_seconds=100.0))


def test_a_batch_stays_in_progress_with_all_requests_processing_until_it_ends(store: BatchStore) -> None:
    batch = store.create(_body(make_requests(4)), V)
    shown = store.describe(batch, BASE)
    assert shown["processing_status"] == "in_progress"
    assert shown["request_counts"]["processing"] == 4
    assert shown["results_url"] is None and shown["ended_at"] is None
    store.clock.advance(99)
    assert store.describe(batch, BASE)["request_counts"]["processing"] == 4
    store.clock.advance(1.5)
    shown = store.describe(batch, BASE)
    assert shown["processing_status"] == "ended"
    assert shown["request_counts"] == {"processing": 0, "succeeded": 4, "errored": 0, "canceled": 0, "expired": 0}
    assert shown["results_url"] == f"{BASE}/v1/messages/batches/{batch.id}/results"


def test_a_cancel_goes_through_canceling_and_keeps_what_already_finished(store: BatchStore) -> None:
    store.config.cancel_seconds = 5.0
    batch = store.create(_body(make_requests(4)), V)
    store.clock.advance(60)  # requests finish at 25, 50, 75, 100 s
    store.cancel(batch.id)
    assert store.describe(batch, BASE)["processing_status"] == "canceling"
    store.clock.advance(6)
    shown = store.describe(batch, BASE)
    assert shown["processing_status"] == "ended"
    assert shown["request_counts"]["succeeded"] == 2
    assert shown["request_counts"]["canceled"] == 2
    assert shown["cancel_initiated_at"] is not None


def test_an_unfinished_batch_expires_after_24_hours(store: BatchStore) -> None:
    store.config.processing_seconds = 48 * 3600.0
    batch = store.create(_body(make_requests(4)), V)
    store.clock.advance(24 * 3600 + 1)
    counts = store.describe(batch, BASE)["request_counts"]
    assert counts["succeeded"] == 2 and counts["expired"] == 2


def test_results_are_archived_29_days_after_creation(store: BatchStore) -> None:
    batch = store.create(_body(make_requests(3)), V)
    store.clock.advance(101)
    assert len(list(store.results_lines(batch.id))) == 3
    store.clock.advance(29 * 86400)
    assert store.describe(batch, BASE)["archived_at"] is not None
    with pytest.raises(ApiError) as caught:
        store.results_lines(batch.id)
    assert caught.value.status == 404 and "archived" in caught.value.message


def test_results_come_in_another_order_than_the_requests(store: BatchStore) -> None:
    store.config.processing_seconds = 0
    requests = make_requests(50)
    batch = store.create(_body(requests), V)
    got = [msgspec.json.decode(line)["custom_id"] for line in store.results_lines(batch.id)]
    wanted = [r["custom_id"] for r in requests]
    assert sorted(got) == sorted(wanted)
    assert got != wanted


@pytest.mark.parametrize(
    ("requests", "fragment"),
    [
        ([], "at least 1"),
        ([{"custom_id": "has space", "params": {}}], "requests.0.custom_id"),
        ([{"custom_id": "x" * 65, "params": {}}], "requests.0.custom_id"),
        ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "duplicate"),
        ([{"custom_id": "a"}], "requests.0.params"),
        ([{"params": {}}], "requests.0.custom_id"),
    ],
)
def test_create_refuses_a_malformed_batch_outright(
    store: BatchStore, requests: list[dict[str, object]], fragment: str
) -> None:
    with pytest.raises(ApiError) as caught:
        store.create(_body(requests), V)
    assert caught.value.status == 400
    assert fragment in caught.value.message
    assert store.inspect(with_custom_ids=False)["batches_created"] == 0


def test_create_refuses_more_than_the_request_limit(store: BatchStore) -> None:
    store.config.max_requests = 3
    with pytest.raises(ApiError, match="at most 3"):
        store.create(_body(make_requests(4)), V)


def test_delete_needs_an_ended_batch(store: BatchStore) -> None:
    batch = store.create(_body(make_requests(1)), V)
    with pytest.raises(ApiError, match="still processing"):
        store.delete(batch.id)
    store.clock.advance(101)
    store.delete(batch.id)
    with pytest.raises(ApiError) as caught:
        store.get(batch.id)
    assert caught.value.status == 404


def test_listing_is_newest_first_with_both_cursors(store: BatchStore) -> None:
    ids = [store.create(_body(make_requests(1)), V).id for _ in range(5)]
    newest_first = ids[::-1]
    first = store.page(limit=2)
    assert [b.id for b in first["chosen"]] == newest_first[:2] and first["has_more"]
    second = store.page(limit=2, after_id=first["last_id"])
    assert [b.id for b in second["chosen"]] == newest_first[2:4] and second["has_more"]
    last = store.page(limit=2, after_id=second["last_id"])
    assert [b.id for b in last["chosen"]] == newest_first[4:] and not last["has_more"]
    back = store.page(limit=2, before_id=last["first_id"])
    assert [b.id for b in back["chosen"]] == newest_first[2:4] and back["has_more"]


def test_count_limited_and_time_window_faults() -> None:
    plan = FaultPlan()
    plan.add(Fault.from_dict({"endpoint": "retrieve", "status": 529, "count": 2}, now=0))
    plan.add(Fault.from_dict({"endpoint": "*", "status": 500, "for_seconds": 7200}, now=0))
    assert plan.take("retrieve", 1).status == 529  # type: ignore[union-attr]
    assert plan.take("retrieve", 2).status == 529  # type: ignore[union-attr]
    assert plan.take("retrieve", 3).status == 500  # type: ignore[union-attr]
    assert plan.take("list", 7199).status == 500  # type: ignore[union-attr]
    assert plan.take("list", 7201) is None


def test_a_429_fault_carries_retry_after_unless_it_is_the_spend_cap() -> None:
    assert Fault.from_dict({"endpoint": "create", "status": 429}, 0).retry_after == 1.0
    capped = Fault.from_dict({"endpoint": "create", "status": 429, "error_code": "enforced_spend_limit_reached"}, 0)
    assert capped.retry_after is None


def _straggling(store: BatchStore) -> None:
    from airflow_provider_claude_batch.emulator.outcomes import OutcomePlanner, OutcomeRule

    store.planner = OutcomePlanner([OutcomeRule.from_dict({"match": "req-[01]", "straggle": True})])


def test_stragglers_hold_a_batch_in_progress_until_a_cancel_which_ends_them_canceled(store: BatchStore) -> None:
    _straggling(store)
    batch = store.create(_body(make_requests(5)), V)
    store.clock.advance(3600)  # long past the others' processing time
    assert store.describe(batch, BASE)["processing_status"] == "in_progress"
    store.cancel(batch.id)
    shown = store.describe(batch, BASE)
    assert shown["processing_status"] == "ended"
    assert shown["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 0, "canceled": 2, "expired": 0}
    kinds = {
        json.loads(line)["custom_id"]: json.loads(line)["result"]["type"] for line in store.results_lines(batch.id)
    }
    assert kinds["req-0"] == kinds["req-1"] == "canceled"


def test_stragglers_left_alone_expire_with_the_batch_after_24_hours(store: BatchStore) -> None:
    _straggling(store)
    batch = store.create(_body(make_requests(5)), V)
    store.clock.advance(86_399)
    assert store.describe(batch, BASE)["processing_status"] == "in_progress"
    store.clock.advance(2)
    counts = store.describe(batch, BASE)["request_counts"]
    assert (counts["succeeded"], counts["expired"]) == (3, 2)


def test_a_straggle_rule_is_a_succeeding_one() -> None:
    from airflow_provider_claude_batch.emulator.outcomes import OutcomeRule

    with pytest.raises(ValueError, match="straggle"):
        OutcomeRule.from_dict({"match": "x", "straggle": True, "outcome": "expired"})
