"""The sync sender's decisions: what is sent, what is retried, when the budget stops it."""

from __future__ import annotations

import json
from collections import deque

import pytest

from airflow_provider_claude_batch.sync.decide import (
    Pending,
    PrefixLeads,
    SyncBudget,
    error_type_for,
    errored_line,
    leftovers,
    retry_delay,
    retry_status,
    shared_prefixes,
    succeeded_line,
)


def _row(custom_id: str, kind: str, error_type: str | None = None) -> dict[str, object]:
    return {"custom_id": custom_id, "result_type": kind, "error_type": error_type}


def test_canceled_expired_and_retryable_failures_are_sent_but_never_a_success_or_an_invalid_request() -> None:
    rows = [
        _row("ok", "succeeded"),
        _row("late", "canceled"),
        _row("old", "expired"),
        _row("busy", "errored", "overloaded_error"),
        _row("bad", "errored", "invalid_request_error"),
        _row("nokey", "errored", "authentication_error"),
    ]
    assert leftovers(rows, guard_canceled=True) == ["late", "old", "busy"]
    # A batch canceled outside Airflow was not the guard's doing: its canceled rows are the user's choice.
    assert leftovers(rows, guard_canceled=False) == ["old", "busy"]


@pytest.mark.parametrize(
    ("status", "again"), [(429, True), (529, True), (500, True), (503, True), (400, False), (404, False), (None, False)]
)
def test_only_answers_that_say_nothing_was_processed_are_sent_again(status: int | None, again: bool) -> None:
    assert retry_status(status) is again


def test_retry_after_is_honoured_else_the_delay_doubles_up_to_a_cap() -> None:
    assert retry_delay(7.0, 1) == 7.0
    assert [retry_delay(None, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(None, 20) == 60.0 and retry_delay(3600.0, 1) == 60.0


def test_a_lost_answer_and_bare_statuses_get_an_error_type() -> None:
    assert error_type_for(None, None) == "api_connection_error"
    assert error_type_for(529, None) == "overloaded_error"
    assert error_type_for(502, None) == "api_error"
    assert error_type_for(400, "invalid_request_error") == "invalid_request_error"


def test_answers_are_kept_as_batch_result_lines() -> None:
    ok = json.loads(succeeded_line("a", {"id": "msg_1", "usage": {"input_tokens": 1, "output_tokens": 2}}))
    assert ok["custom_id"] == "a" and ok["result"]["type"] == "succeeded"
    assert ok["result"]["message"]["id"] == "msg_1"
    bad = json.loads(errored_line("b", "sync_budget_exhausted", "not sent"))
    assert bad["result"]["error"]["error"] == {"type": "sync_budget_exhausted", "message": "not sent"}


def test_without_a_cap_every_request_is_sent() -> None:
    budget = SyncBudget(None)
    for _ in range(100):
        assert budget.next_step() == "send"
        budget.started()


def test_the_first_call_goes_alone_then_calls_start_while_the_dearest_so_far_still_fits() -> None:
    budget = SyncBudget(1.0)
    assert budget.next_step() == "send"
    budget.started()
    assert budget.next_step() == "wait"  # nothing is known of a call's cost yet
    budget.settle(0.25)
    assert budget.next_step() == "send"  # 0.25 spent + 0.25 for the next <= 1.0
    budget.started()
    budget.started()
    assert budget.next_step() == "send"  # 0.25 + 3 x 0.25 = 1.0
    budget.started()
    assert budget.next_step() == "wait"  # 0.25 + 4 x 0.25 > 1.0: wait for the calls in flight
    budget.settle(0.25)
    budget.settle(0.25)
    budget.settle(None)  # errored: nothing billed
    assert budget.next_step() == "send"  # 0.75 + 0.25 = 1.0
    budget.started()
    budget.settle(0.25)
    assert (
        budget.spent == pytest.approx(1.0) and budget.answered == 4
    )  # priced answers (the errored call billed nothing)
    assert budget.next_step() == "stop"


def test_answers_recorded_by_an_earlier_try_count_against_the_cap() -> None:
    budget = SyncBudget(0.5)
    budget.add(0.3)
    assert budget.next_step() == "stop"  # 0.3 + 0.3 > 0.5


def _pending(*keys: str | None) -> list[Pending]:
    return [(f"r{i}", b"{}", None if key is None else key.encode()) for i, key in enumerate(keys)]


def test_the_first_request_of_a_cached_prefix_goes_alone_and_the_others_once_it_wrote_the_entry() -> None:
    requests = _pending("a", "a", None, "b", "a", "b")
    leads = PrefixLeads(deque(requests))
    taken = [leads.take(), leads.take(), leads.take()]
    # a's lead, the request without a breakpoint, b's lead; the other a's and b are held back
    assert [t[0] if t else None for t in taken] == ["r0", "r2", "r3"]
    assert leads.take() is None and len(leads) == 3
    assert taken[0] is not None and taken[2] is not None
    leads.answered(taken[0], wrote=True)  # a is in the cache now: its requests go, in their order
    assert [leads.take(), leads.take()] == [requests[1], requests[4]]
    assert leads.take() is None  # r5 still waits for b's lead
    leads.answered(taken[2], wrote=True)
    assert leads.take() == requests[5] and leads.take() is None and not leads


def test_a_lead_that_wrote_nothing_hands_the_lead_to_the_next_request_of_its_prefix() -> None:
    requests = _pending("a", "a", "a")
    leads = PrefixLeads(deque(requests))
    first = leads.take()
    assert first == requests[0] and leads.take() is None
    leads.answered(first, wrote=False)  # an error answer: nothing was cached
    second = leads.take()
    assert second == requests[1] and leads.take() is None  # the next one leads, alone
    leads.answered(second, wrote=True)
    assert leads.take() == requests[2]


def test_what_is_left_includes_the_held_requests_and_shared_prefixes_are_counted() -> None:
    requests = _pending("a", "a", "b", None, None)
    leads = PrefixLeads(deque(requests))
    assert leads.take() == requests[0] and leads.take() == requests[2]
    assert sorted(r[0] for r in leads.left()) == ["r1", "r3", "r4"]
    assert leads.take() == requests[3]  # the held one does not stop those behind it
    assert shared_prefixes(requests) == 1
