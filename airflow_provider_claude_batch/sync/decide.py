"""The sync sender's decisions: which requests go to the Messages API, when to retry, when the budget stops it.

Pure: rows and answers in, decisions and result lines out. Each answer is kept as a line shaped like a
batch result (``{"custom_id", "result"}``), so it is folded, counted and priced by the same code as a
batch's results (at the standard price: the Messages API has no batch discount).

Order rule: a cache entry is readable only once the first response that writes it begins, so calls that
share a cached prefix and go out together would each pay to write it (2x the input price for 1 hour).
The first request of each such prefix goes alone; the others wait for its answer and read what it wrote.

Retry rule: a Messages call is billed once it is processed, so a request is sent again only when its
answer says it was not processed: 429 (rate limited), 529 (overloaded) and 5xx (the API failed before
answering; an error answer carries no message and bills nothing). A call whose answer never came
(connection lost, timeout) may have been processed and billed: it is not sent again, and its row says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.results.rounds import worth_retrying

if TYPE_CHECKING:
    from collections import deque
    from collections.abc import Iterable, Mapping

SYNC_BUDGET_EXHAUSTED = "sync_budget_exhausted"
ANSWER_LOST = "api_connection_error"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
_ERROR_TYPE_BY_STATUS = {429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}
_encoder = msgspec.json.Encoder()


def worth_sending(row: Mapping[str, Any], *, guard_canceled: bool) -> bool:
    """Whether a landed batch row goes to the Messages API: canceled by the deadline guard, expired, or
    failed for the service's reasons. A succeeded request is never sent again; an invalid one would fail again.
    """
    kind = row["result_type"]
    if kind == "canceled":
        return guard_canceled
    return worth_retrying(kind, row.get("error_type"))


def leftovers(failure_rows: Iterable[Mapping[str, Any]], *, guard_canceled: bool) -> list[str]:
    """The custom_ids of a landed round's failures that the Messages API should have, in order."""
    return [row["custom_id"] for row in failure_rows if worth_sending(row, guard_canceled=guard_canceled)]


def retry_status(status: int | None) -> bool:
    """Whether an answer with this HTTP status says the call was not processed (so resending pays once)."""
    return status is not None and status in RETRY_STATUSES


def retry_delay(retry_after: float | None, attempt: int, cap: float = 60.0) -> float:
    """The server's retry-after when it sent one, else 1, 2, 4... seconds, never over `cap`."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    return min(float(2 ** (attempt - 1)), cap)


def error_type_for(status: int | None, body_type: str | None) -> str:
    """The error type a failed call's row carries: the API's own, else one read from the status."""
    if body_type:
        return body_type
    if status is None:
        return ANSWER_LOST
    return _ERROR_TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


def succeeded_line(custom_id: str, message: Mapping[str, Any]) -> bytes:
    """A Messages answer as a batch result line (newline-terminated)."""
    return _encoder.encode({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}) + b"\n"


def errored_line(custom_id: str, error_type: str, message: str) -> bytes:
    """A failed call (or a request not sent) as a batch result line, with the API's error nesting."""
    error = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": None}
    return _encoder.encode({"custom_id": custom_id, "result": {"type": "errored", "error": error}}) + b"\n"


@dataclass
class SyncBudget:
    """`max_sync_cost_usd` as decisions: send, wait for answers in flight, or stop.

    A request's cost is known only once answered, so the next one is assumed to cost as much as the
    dearest so far: a request starts only while the spend, plus that much for each call in flight and
    for the new one, stays within the cap. The first call goes alone (nothing is known yet).
    """

    cap: float | None
    spent: float = 0.0
    dearest: float = 0.0
    answered: int = 0
    in_flight: int = 0

    def next_step(self) -> str:
        """``"send"``, ``"wait"`` (for an answer in flight) or ``"stop"`` (the rest would pass the cap)."""
        if self.cap is None:
            return "send"
        if not self.answered:
            return "wait" if self.in_flight else "send"
        if self.spent + (self.in_flight + 1) * self.dearest <= self.cap:
            return "send"
        return "wait" if self.in_flight else "stop"

    def started(self) -> None:
        """A call went out."""
        self.in_flight += 1

    def settle(self, cost: float | None) -> None:
        """A call came back: with its standard-price cost when it was answered with a message."""
        self.in_flight -= 1
        self.add(cost)

    def add(self, cost: float | None) -> None:
        """Count an answer's cost (also the answers recorded by an earlier try)."""
        if cost is not None:
            self.spent += cost
            self.dearest = max(self.dearest, cost)
            self.answered += 1


# A request to send: custom_id, params, the key of its first cache breakpoint's prefix (None: no breakpoint).
Pending = tuple[str, bytes, bytes | None]


@dataclass
class PrefixLeads:
    """The requests still to send, taken so that only one call per cached prefix writes it (the order rule).

    A request whose prefix has a call in flight and none answered yet is held back; it is taken once that
    call is answered with a message (the entry is written) or, when the call failed, as the prefix's next lead.
    """

    queue: deque[Pending]
    leading: set[bytes] = field(default_factory=set)
    written: set[bytes] = field(default_factory=set)
    held: dict[bytes, list[Pending]] = field(default_factory=dict)

    def take(self) -> Pending | None:
        """The next request to send, in order; None when none is left or every one left waits for a lead."""
        while self.queue:
            request = self.queue.popleft()
            key = request[2]
            if key is None or key in self.written:
                return request
            if key in self.leading:
                self.held.setdefault(key, []).append(request)
                continue
            self.leading.add(key)
            return request
        return None

    def answered(self, request: Pending, *, wrote: bool) -> None:
        """`request`'s call is over; `wrote`: it was answered with a message (its prefix is in the cache now)."""
        key = request[2]
        if key is None or key not in self.leading:
            return
        self.leading.discard(key)
        if wrote:
            self.written.add(key)
        self.queue.extendleft(reversed(self.held.pop(key, [])))

    def left(self) -> list[Pending]:
        """Every request not taken, in order of their prefixes' leads then their own."""
        return [*self.queue, *(request for held in self.held.values() for request in held)]

    def __len__(self) -> int:
        return len(self.queue) + sum(map(len, self.held.values()))


def shared_prefixes(requests: Iterable[Pending]) -> int:
    """How many cached prefixes two or more of `requests` share (for the log)."""
    counts: dict[bytes, int] = {}
    for _, _, key in requests:
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    return sum(1 for count in counts.values() if count > 1)
