"""Split prepared requests into batches within the API's count and size limits, keeping the input order."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES, API_MAX_REQUESTS
from airflow_provider_claude_batch.requests.prepare import BODY_PREFIX, BODY_SUFFIX

if TYPE_CHECKING:
    from airflow_provider_claude_batch.requests.prepare import PreparedRequests


@dataclass(frozen=True)
class BatchPlan:
    """One batch of a split input: requests [first, stop)."""

    index: int
    first: int
    stop: int
    body_bytes: int

    @property
    def request_count(self) -> int:
        """How many requests the batch holds."""
        return self.stop - self.first


def plan_batches(
    prepared: PreparedRequests,
    *,
    max_requests: int = API_MAX_REQUESTS,
    max_body_bytes: int = API_MAX_BODY_BYTES,
    canary: int = 0,
) -> list[BatchPlan]:
    """Split into as few batches as the count and size limits allow, keeping the input order.

    Each batch takes as many requests as fit (a bisection over the item end offsets), and always at
    least one, so a request too large for any batch still lands alone in its own. With `canary`
    (fewer than all), the first that many requests are a batch of their own, planned first.
    """
    if not 1 <= max_requests <= API_MAX_REQUESTS:
        raise ValueError(f"max_requests_per_batch must be between 1 and {API_MAX_REQUESTS}")
    plans: list[BatchPlan] = []
    first = 0
    total = len(prepared)
    items_room = max_body_bytes - len(BODY_PREFIX) - len(BODY_SUFFIX)
    if 0 < canary < total:
        fitting = bisect_right(prepared.ends, prepared.starts[0] + items_room, 0)
        first = max(1, min(canary, fitting, max_requests))
        plans.append(BatchPlan(0, 0, first, prepared.body_size(0, first)))
    while first < total:
        fitting = bisect_right(prepared.ends, prepared.starts[first] + items_room, first)
        stop = max(first + 1, min(fitting, first + max_requests))
        plans.append(BatchPlan(len(plans), first, stop, prepared.body_size(first, stop)))
        first = stop
    return plans
