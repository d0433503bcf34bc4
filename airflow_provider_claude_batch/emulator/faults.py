"""Faults a test can inject per endpoint: error statuses, lost responses, cut streams, slow answers.

A fault is served either a number of times (`count`) or throughout a window of emulator-clock
time (`for_seconds`), which is how a test stages a two-hour outage without waiting two hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

ENDPOINTS = ("create", "retrieve", "list", "cancel", "delete", "results", "models", "messages", "count_tokens")
FaultKind = Literal["status", "lost_response", "cut_stream", "slow_stream", "delay", "duplicate_line", "unknown_result"]
FAULT_KINDS = ("status", "lost_response", "cut_stream", "slow_stream", "delay", "duplicate_line", "unknown_result")
RESULTS_ONLY_KINDS = ("cut_stream", "slow_stream", "duplicate_line", "unknown_result")
UNKNOWN_CUSTOM_ID = "never-submitted"
ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class Fault:
    """One injected misbehaviour.

    - `status`: answer `status` with the API's error envelope (429s carry `retry_after`, unless
      `error_code` is `enforced_spend_limit_reached`, which the real API sends without one).
    - `lost_response`: do the work (a create really makes the batch), then lose the answer:
      `mode="reset"` drops the connection half-way through the body, `mode="timeout"` answers only
      after `delay_seconds`, long after the client gave up.
    - `cut_stream`: a results download that breaks after `after_lines` lines.
    - `slow_stream`: a results download that pauses `delay_seconds` between chunks (256 KB each),
      so a test can kill the reader while it is mid-stream.
    - `delay`: answer normally after `delay_seconds`.
    - `duplicate_line`: a results download whose last line is replaced by a second copy of line
      `after_lines` (0: the first): the right number of lines, one result missing, one twice.
    - `unknown_result`: a results download whose last line is served for custom_id
      "never-submitted" instead: the right number of lines, one of them for a request never made.
    """

    endpoint: str
    kind: FaultKind = "status"
    status: int = 529
    retry_after: float | None = None
    error_code: str | None = None
    mode: Literal["reset", "timeout"] = "reset"
    delay_seconds: float = 0.0
    after_lines: int = 0
    count: int | None = 1
    until: float | None = None

    @property
    def error_type(self) -> str:
        """The API error type the real API sends with this status."""
        return ERROR_TYPE_BY_STATUS.get(self.status, "api_error")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], now: float) -> Fault:
        """A fault from the control route's JSON, checked field by field (`for_seconds` counts from `now`)."""
        data = dict(raw)
        for_seconds = data.pop("for_seconds", None)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault field(s): {sorted(unknown)}")
        fault = cls(**data)
        if fault.endpoint != "*" and fault.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS} or '*', not {fault.endpoint!r}")
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        if fault.kind in RESULTS_ONLY_KINDS and fault.endpoint != "results":
            raise ValueError(f"{fault.kind} applies to the results endpoint only")
        if for_seconds is not None:
            fault.until = now + float(for_seconds)
            fault.count = None
        if fault.status == 429 and fault.retry_after is None and fault.error_code is None:
            fault.retry_after = 1.0
        return fault


class FaultPlan:
    """Faults waiting to be served, oldest first."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self.served: dict[str, int] = {}

    def add(self, fault: Fault) -> None:
        """Queue a fault behind those already waiting."""
        self._faults.append(fault)

    def clear(self) -> None:
        """Drop every fault not yet served."""
        self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The faults still to serve, as the state route reports them."""
        return [{"endpoint": f.endpoint, "kind": f.kind, "status": f.status, "count": f.count} for f in self._faults]

    def take(self, endpoint: str, now: float) -> Fault | None:
        """The fault to apply to this call, if any; count-limited faults are used up as they are served."""
        self._faults = [f for f in self._faults if f.until is None or f.until > now]
        for fault in self._faults:
            if fault.endpoint not in (endpoint, "*"):
                continue
            if fault.count is not None:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            self.served[endpoint] = self.served.get(endpoint, 0) + 1
            return fault
        return None


def tampered_results(lines: Iterable[bytes], fault: Fault | None) -> Iterator[bytes]:
    """The result lines as a `duplicate_line` or `unknown_result` fault serves them (else unchanged)."""
    if fault is None or fault.kind not in ("duplicate_line", "unknown_result"):
        yield from lines
        return
    kind = fault.kind
    kept: list[bytes] = list(lines)
    if not kept:
        return
    if kind == "duplicate_line":
        kept[-1] = kept[min(fault.after_lines, len(kept) - 1)]
    else:
        line = msgspec.json.decode(kept[-1])
        kept[-1] = msgspec.json.encode({**line, "custom_id": UNKNOWN_CUSTOM_ID}) + b"\n"
    yield from kept
