"""The routing step: which requests go through batches and which through the Messages API, and by when.

`Routing` holds the deadline and route settings of the one-task operator (and the decorator); the
resubmission rounds (`operators.rounds.Rounds`) ask it for the first route, the deadline and each
round's switch time (`wait.deadline.SwitchPlan`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.wait.deadline import SwitchPlan

log = logging.getLogger(__name__)
Route = Literal["batch", "auto", "sync"]
ROUTES = ("batch", "auto", "sync")
DEADLINE_FILE = "deadline.json"
DEADLINE_PARAMS_DOC = """
    :param deadline: when the results must be landed: a timezone-aware ``datetime``, a ``timedelta``
        from the start of the task's first try (kept across retries and clears), or a templated string
        parsed as an ISO date-time (``"{{ data_interval_end + macros.timedelta(hours=7) }}"``). With
        ``sync_fallback``, the batches still unfinished at the switch time (logged at submit) are
        canceled and their requests sent to the Messages API at the standard price (twice the batch
        price). A deadline even the Messages API alone cannot meet fails before anything is paid for.
    :param sync_fallback: with a ``deadline``, send what the batches have not finished by the switch
        time (canceled, expired and retryable-failed requests) to the Messages API; False only waits.
    :param sync_concurrency: Messages API calls in flight at once: more lands sooner (a later switch
        time) but meets the rate limit sooner (429s are waited out, never paid twice).
    :param max_sync_cost_usd: stop sending to the Messages API once its standard-price spend would pass
        this; the requests not sent are reported as failed with error type ``sync_budget_exhausted``.
    :param sync_policy: a `SyncPolicy`: the per-request latency and landing time the switch time assumes.
"""
ROUTE_PARAMS_DOC = """
    :param route: ``"batch"`` (default), ``"sync"`` (every request through the Messages API, at the
        standard price, landed in the same files), or ``"auto"`` (sync under ``sync_below`` requests).
    :param sync_below: with ``route="auto"``, inputs with fewer requests than this go through the
        Messages API (polling a batch is not worth it for a handful of requests).
"""
# Both, for the one-task operator (the results operator takes the deadline only: its batches are given).
ROUTING_PARAMS_DOC = DEADLINE_PARAMS_DOC + ROUTE_PARAMS_DOC


@dataclass(frozen=True)
class SyncPolicy:
    """What the switch time assumes, and how hard the sync sender tries.

    :param request_latency: one Messages API call's time (measure yours: the sync phase logs it);
        the switch time is ``deadline - landing_time - (ceil(requests / sync_concurrency) + 1) * request_latency``
        (one wave more for the first call of each cached prefix, which goes alone).
    :param landing_time: time kept for canceling the batches, waiting for them to end and landing.
    :param max_attempts: calls per request when the API answers 429, 529 or 5xx (not processed, not billed).
    """

    request_latency: timedelta = timedelta(seconds=30)
    landing_time: timedelta = timedelta(minutes=5)
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if self.request_latency.total_seconds() <= 0:
            raise ValueError(f"request_latency must be positive, not {self.request_latency}")
        if self.landing_time.total_seconds() < 0:
            raise ValueError(f"landing_time cannot be negative ({self.landing_time})")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")


@dataclass
class Routing:
    """The route and deadline settings (see `ROUTING_PARAMS_DOC`); mutable only so Airflow renders `deadline`."""

    template_fields: ClassVar[tuple[str, ...]] = ("deadline",)

    deadline: datetime | timedelta | str | None = None
    sync_fallback: bool = True
    sync_concurrency: int = 8
    max_sync_cost_usd: float | None = None
    route: Route = "batch"
    sync_below: int = 100
    policy: SyncPolicy = field(default_factory=SyncPolicy)

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"route must be one of {ROUTES}, not {self.route!r}")
        if isinstance(self.sync_concurrency, bool) or not 1 <= self.sync_concurrency <= 1000:
            raise ValueError(f"sync_concurrency must be between 1 and 1000, not {self.sync_concurrency!r}")
        if self.max_sync_cost_usd is not None and not self.max_sync_cost_usd >= 0:
            raise ValueError(f"max_sync_cost_usd must be at least 0 dollars, not {self.max_sync_cost_usd!r}")
        if self.sync_below < 0:
            raise ValueError(f"sync_below cannot be negative, not {self.sync_below}")
        if isinstance(self.deadline, datetime) and self.deadline.tzinfo is None:
            raise ValueError("deadline must be timezone-aware (e.g. pendulum.datetime(..., tz='UTC'))")
        if isinstance(self.deadline, timedelta) and self.deadline.total_seconds() <= 0:
            raise ValueError(f"deadline as a timedelta must be positive, not {self.deadline}")
        if not isinstance(self.policy, SyncPolicy):
            raise TypeError(f"sync_policy takes a SyncPolicy(...), not {type(self.policy).__name__}")

    @property
    def guarded(self) -> bool:
        """Whether batches past their switch time are canceled and the rest sent to the Messages API."""
        return self.deadline is not None and self.sync_fallback

    def first_route(self, requests: int) -> Literal["batch", "sync"]:
        """Where the first round goes: ``route``, with ``"auto"`` decided by the input's size."""
        if self.route == "sync" or (self.route == "auto" and requests < self.sync_below):
            return "sync"
        return "batch"

    def switch_plan(self, deadline_at: float | None, requests: int) -> SwitchPlan | None:
        """The switch-time arithmetic for `requests` still unfinished (None without a guarded deadline)."""
        if deadline_at is None or not self.sync_fallback:
            return None
        from airflow_provider_claude_batch.wait.deadline import SwitchPlan

        return SwitchPlan(
            deadline_at,
            requests,
            self.sync_concurrency,
            self.policy.request_latency.total_seconds(),
            self.policy.landing_time.total_seconds(),
        )

    def resolve_deadline(self, context: Context, rounds: ObjectStoragePath) -> tuple[float | None, bool]:
        """The deadline as epoch seconds, and whether this is its first resolution (nothing paid yet).

        The value is kept in ``rounds/deadline.json`` on first resolution, so a retry or clear keeps the
        same deadline (a ``timedelta`` counts from the first try's start, not this one's); a deadline
        changed in the DAG since is resolved again (a ``timedelta`` still from the first try's start).
        """
        if self.deadline is None:
            return None, False
        import msgspec

        from airflow_provider_claude_batch.storage import read_bytes_if_exists, write_atomically
        from airflow_provider_claude_batch.wait.deadline import utc_clock

        path = rounds / DEADLINE_FILE
        raw = read_bytes_if_exists(path)
        kept: dict[str, Any] = msgspec.json.decode(raw) if raw else {}
        given = self.deadline if isinstance(self.deadline, str) else repr(self.deadline)
        if kept.get("given") == given:
            return float(kept["deadline_epoch"]), False
        anchor = float(kept.get("first_try_started") or _try_started(context))
        deadline_at = self._epoch(anchor)
        record = {
            "deadline_epoch": deadline_at,
            "deadline": utc_clock(deadline_at),
            "given": given,
            "first_try_started": anchor,
        }
        write_atomically(path, msgspec.json.encode(record))
        return deadline_at, not kept

    def forget_deadline(self, rounds: ObjectStoragePath) -> None:
        """Drop the kept deadline (it was refused before anything was paid for: a fixed DAG starts afresh)."""
        path = rounds / DEADLINE_FILE
        if path.exists():
            path.unlink()

    def _epoch(self, first_try_started: float) -> float:
        from airflow_provider_claude_batch.exceptions import BatchInputError

        value: Any = self.deadline
        if isinstance(value, timedelta):
            return first_try_started + value.total_seconds()
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.strip())
            except ValueError:
                raise BatchInputError(
                    f"deadline {value!r} is not an ISO date-time (e.g. 2026-12-08T07:00:00+00:00); "
                    "nothing was submitted."
                ) from None
            if value.tzinfo is None:
                raise BatchInputError(f"deadline {value.isoformat()} has no time zone; add one (+00:00 for UTC).")
        if isinstance(value, datetime):
            return value.astimezone(UTC).timestamp()
        raise BatchInputError(f"deadline must be a datetime, timedelta or string, not {type(value).__name__}")


def _try_started(context: Context) -> float:
    """When this try started (the task instance's start date), else now."""
    started = getattr(context["ti"], "start_date", None)
    return started.timestamp() if isinstance(started, datetime) else time.time()
