"""The spend controls are checked when the task is defined, with a message that says what to change."""

from __future__ import annotations

import pytest

from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.submit.submission import Submission
from tests.helpers import make_requests


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_cost_usd": 0}, "max_cost_usd is a positive number of dollars"),
        ({"max_cost_usd": True}, "max_cost_usd is a positive number of dollars"),
        ({"max_cost_usd": 5.0, "preflight": False}, "max_cost_usd needs preflight=True"),
        ({"canary_requests": -1}, "canary_requests is a number of requests"),
        ({"canary_requests": 100_001}, "canary_requests must be at most 100000"),
    ],
)
def test_spend_settings_that_cannot_work_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Submission(requests=[], **settings)  # type: ignore[arg-type]


def test_the_canary_is_a_part_of_its_own_only_when_fewer_than_all_requests() -> None:
    prepared, _, _ = prepare_requests(list(enumerate(make_requests(5), start=1)))
    step = Submission(requests=[], canary_requests=2, max_requests_per_batch=2)
    assert step.has_canary(prepared)
    assert [(p.first, p.stop) for p in step.plan(prepared)] == [(0, 2), (2, 4), (4, 5)]
    assert [(p.first, p.stop) for p in step.plan(prepared, canary=False)] == [(0, 2), (2, 4), (4, 5)]
    whole = Submission(requests=[], canary_requests=5, max_requests_per_batch=2)
    assert not whole.has_canary(prepared)  # split by size alone: no part waits on another
    one = Submission(requests=[], canary_requests=1)
    assert [(p.first, p.stop) for p in one.plan(prepared)] == [(0, 1), (1, 5)]
    assert [(p.first, p.stop) for p in one.plan(prepared, canary=False)] == [(0, 5)]
