"""Which failures get another round, and how rounds fold into one row per request: pure."""

from __future__ import annotations

import pytest

from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.results.rounds import RoundsIndex, retry_ids, worth_retrying
from tests.helpers import make_requests


@pytest.mark.parametrize(
    ("result_type", "error_type", "retry"),
    [
        ("expired", None, True),
        ("errored", "api_error", True),
        ("errored", "overloaded_error", True),
        ("errored", "rate_limit_error", True),
        ("errored", "timeout_error", True),
        ("errored", "invalid_request_error", False),
        ("errored", "authentication_error", False),
        ("errored", "permission_error", False),
        ("errored", "billing_error", False),
        ("errored", "not_found_error", False),
        ("canceled", None, False),
        ("succeeded", None, False),
    ],
)
def test_only_the_services_failures_and_expiry_are_worth_another_round(
    result_type: str, error_type: str | None, retry: bool
) -> None:
    assert worth_retrying(result_type, error_type) is retry


def test_retry_ids_keep_order() -> None:
    rows = [
        {"custom_id": "a", "result_type": "expired"},
        {"custom_id": "b", "result_type": "errored", "error_type": "invalid_request_error"},
        {"custom_id": "c", "result_type": "errored", "error_type": "overloaded_error"},
    ]
    assert retry_ids(rows) == ["a", "c"]


def test_the_last_round_wins_and_attempts_are_counted() -> None:
    index = RoundsIndex()
    index.add_round(1, ["a", "b"])
    index.add_round(2, ["a"])
    assert index.final_row(0, {"custom_id": "a"}) is None
    assert index.final_row(1, {"custom_id": "a"}) is None
    assert index.final_row(2, {"custom_id": "a"}) == {"custom_id": "a", "round": 2, "attempts": 3}
    assert index.final_row(1, {"custom_id": "b"}) == {"custom_id": "b", "round": 1, "attempts": 2}
    assert index.final_row(0, {"custom_id": "c"}) == {"custom_id": "c", "round": 0, "attempts": 1}


def test_a_follow_up_round_resends_the_original_params_byte_for_byte() -> None:
    prepared, _, _ = prepare_requests(list(enumerate(make_requests(5), 1)))
    subset = prepared.subset(["req-3", "req-1"])
    assert subset.custom_ids == ["req-1", "req-3"]
    assert (
        subset.body(0, 2)
        == b'{"requests":['
        + prepared.buffer[prepared.starts[1] : prepared.ends[1]]
        + b","
        + prepared.buffer[prepared.starts[3] : prepared.ends[3]]
        + b"]}"
    )
    with pytest.raises(KeyError, match="nope"):
        prepared.subset(["nope"])
