"""The canary's verdict: did its requests fail for reasons the rest would meet too? Pure.

Its result lines in; the errored ones whose error type a retry would meet again (an invalid request,
a refused model, auth, billing, permission) out. A failure that was the service's (overloaded, server
error, rate limit, timeout), an expiry or a cancel says nothing about the input, and lets the rest go.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from airflow_provider_claude_batch.results.rounds import worth_retrying

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class _ErrorObject(msgspec.Struct):
    type: str = ""
    message: str = ""


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorObject = msgspec.field(default_factory=_ErrorObject)


class _Result(msgspec.Struct):
    type: str
    error: _ErrorEnvelope | None = None


class _Line(msgspec.Struct):
    custom_id: str
    result: _Result


_decoder = msgspec.json.Decoder(_Line)


@dataclass(frozen=True)
class CanaryFailure:
    """One canary request that failed for its own reasons."""

    custom_id: str
    error_type: str
    message: str


def canary_failures(lines: Iterable[bytes]) -> tuple[list[CanaryFailure], int]:
    """The canary's requests that failed in a way the rest of the input would too, and how many lines it had."""
    failures: list[CanaryFailure] = []
    seen = 0
    for line in lines:
        seen += 1
        parsed = _decoder.decode(line)
        result = parsed.result
        if result.type != "errored":
            continue
        error = result.error.error if result.error is not None else _ErrorObject()
        if not worth_retrying(result.type, error.type):
            failures.append(CanaryFailure(parsed.custom_id, error.type or "unknown", error.message))
    return failures, seen


def canary_message(
    failures: list[CanaryFailure], canary_size: int, rest: int, batch_id: str, lines: Mapping[str, int]
) -> str:
    """The failed task's message: which canary requests failed (line, custom_id, error), and what was spared."""
    shown = "\n".join(
        f"  - line {lines.get(f.custom_id, '?')} (custom_id {f.custom_id!r}): {f.error_type}: {f.message}"
        for f in failures[:10]
    )
    more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
    return (
        f"{len(failures)} of the {canary_size} canary requests (batch {batch_id}) failed for reasons the rest "
        f"would meet too; the other {rest} requests were not submitted. Fix the input and run the task again "
        f"(a new input is a new submission):\n{shown}{more}\n"
    )
