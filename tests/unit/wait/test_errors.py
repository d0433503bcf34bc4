"""The one error-to-decision rule of waits and queue checks: refused ends at once, transient is ridden out."""

from __future__ import annotations

import random

import pytest

from airflow_provider_claude_batch.wait.errors import ErrorBudget, classify_status, decide_after_error


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


def test_proxy_authentication_is_a_refusal() -> None:
    assert classify_status(407) == "fatal"


def test_the_queue_guard_ends_at_once_on_a_refusal() -> None:
    budget = ErrorBudget(60)
    for status in (401, 403, 404, 407):
        check = decide_after_error(budget, status, None, 1.0, 0.0)
        assert (check.action, check.kind) == ("stop", "refused")


def test_the_queue_guard_rides_out_errors_for_the_budget_then_ends() -> None:
    budget = ErrorBudget(60)
    rng = random.Random(1)
    checks = [
        decide_after_error(budget, status, None, 1.0, now, rng)
        for now, status in ((0.0, None), (10.0, 503), (59.0, 529))
    ]
    assert [c.action for c in checks] == ["retry", "retry", "retry"]
    assert all(0 < c.delay <= 10 for c in checks)
    assert decide_after_error(budget, None, None, 1.0, 60.0, rng).kind == "unavailable"


def test_the_queue_guard_honours_retry_after_and_a_success_resets_the_budget() -> None:
    budget = ErrorBudget(60)
    assert decide_after_error(budget, 429, 7.0, 1.0, 0.0).delay == 7.0
    budget.record_success()
    assert decide_after_error(budget, 503, None, 1.0, 100.0).action == "retry"
    assert decide_after_error(budget, 503, None, 1.0, 159.0).action == "retry"
    assert decide_after_error(budget, 503, None, 1.0, 160.0).action == "stop"
