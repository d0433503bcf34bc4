"""Which failed requests deserve another round, and how rounds fold into one final row per request.

Pure: callers stream rows in and out. A request is resubmitted when its failure was the service's
(server error, overloaded, rate limited, timed out) or it expired before being processed; an
invalid request, or one refused for auth, billing or permission, would fail again and is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.results.totals import INVALID_OUTPUT

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

RETRYABLE_ERROR_TYPES = frozenset({"api_error", "overloaded_error", "rate_limit_error", "timeout_error"})


def worth_retrying(result_type: str, error_type: str | None) -> bool:
    """Whether a failure was the service's (or an expiry), so that another round may succeed."""
    if result_type == "expired":
        return True
    return result_type == "errored" and error_type in RETRYABLE_ERROR_TYPES


def retry_ids(failure_rows: Iterable[Mapping[str, Any]], invalid_retried: set[str] | None = None) -> list[str]:
    """The custom_ids of a round's failures that are worth another round, in order.

    With `invalid_retried` (``retry_invalid_output``), a request whose output did not validate is
    retried once: the set notes those already retried, and gains the ones retried now.
    """
    ids = []
    for row in failure_rows:
        custom_id = row["custom_id"]
        error_type = row.get("error_type")
        if worth_retrying(row["result_type"], error_type):
            ids.append(custom_id)
        elif invalid_retried is not None and error_type == INVALID_OUTPUT and custom_id not in invalid_retried:
            invalid_retried.add(custom_id)
            ids.append(custom_id)
    return ids


@dataclass
class RoundsIndex:
    """For requests seen again in later rounds: their last round and how many attempts they took.

    Only resubmitted requests are indexed (a small set); everything else was final in round 0.
    """

    last_round: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)

    def add_round(self, round_number: int, custom_ids: Iterable[str]) -> None:
        """Index the custom_ids resubmitted in `round_number`."""
        for custom_id in custom_ids:
            self.last_round[custom_id] = round_number
            self.attempts[custom_id] = self.attempts.get(custom_id, 1) + 1

    def final_row(self, round_number: int, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """`row` (from `round_number`) with its round and attempts, or None if a later round superseded it."""
        custom_id = row["custom_id"]
        if self.last_round.get(custom_id, 0) != round_number:
            return None
        return {**row, "round": round_number, "attempts": self.attempts.get(custom_id, 1)}
