"""The routing step: parameters refused at construction, the first route, the deadline resolved once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.storage import as_path
from airflow_provider_claude_batch.sync.routing import Routing, SyncPolicy

STARTED = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)


def _context(started: datetime = STARTED) -> Any:
    return {"ti": SimpleNamespace(start_date=started)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"route": "fast"}, "route must be one of"),
        ({"sync_concurrency": 0}, "sync_concurrency"),
        ({"max_sync_cost_usd": -1.0}, "max_sync_cost_usd"),
        ({"sync_below": -1}, "sync_below"),
        ({"deadline": datetime(2026, 12, 7, 7)}, "timezone-aware"),
        ({"deadline": timedelta(0)}, "positive"),
    ],
)
def test_bad_values_are_refused_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Routing(**kwargs)


def test_a_sync_policy_must_make_sense() -> None:
    with pytest.raises(ValueError, match="request_latency"):
        SyncPolicy(request_latency=timedelta(0))
    with pytest.raises(TypeError, match="SyncPolicy"):
        Routing(policy={"request_latency": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("route", "requests", "first"),
    [("batch", 5, "batch"), ("sync", 5000, "sync"), ("auto", 99, "sync"), ("auto", 100, "batch")],
)
def test_the_first_route(route: Any, requests: int, first: str) -> None:
    assert Routing(route=route).first_route(requests) == first


def test_no_switch_time_without_a_deadline_or_without_the_fallback() -> None:
    assert Routing().switch_plan(None, 10) is None
    assert Routing(deadline=timedelta(hours=1), sync_fallback=False).switch_plan(1e9, 10) is None
    plan = Routing(deadline=timedelta(hours=1), sync_concurrency=4).switch_plan(1e9, 10)
    assert plan is not None and plan.sync_seconds == (3 + 1) * 30 and plan.landing == 300


def test_a_timedelta_counts_from_the_first_try_and_is_kept_for_the_retries(tmp_path: Path) -> None:
    rounds = as_path(str(tmp_path / "rounds"))
    routing = Routing(deadline=timedelta(hours=7))
    assert routing.resolve_deadline(_context(), rounds) == ((STARTED + timedelta(hours=7)).timestamp(), True)
    # A retry starts later; the deadline stays the first try's.
    later = _context(STARTED + timedelta(hours=2))
    assert routing.resolve_deadline(later, rounds) == ((STARTED + timedelta(hours=7)).timestamp(), False)
    kept = json.loads((tmp_path / "rounds" / "deadline.json").read_text())
    assert kept["deadline"] == "2026-12-07 07:00:00 UTC"


def test_a_rendered_template_is_parsed_and_a_bad_one_refused(tmp_path: Path) -> None:
    routing = Routing(deadline="2026-12-08 07:00:00+00:00")
    deadline, _ = routing.resolve_deadline(_context(), as_path(str(tmp_path / "a")))
    assert deadline == datetime(2026, 12, 8, 7, tzinfo=UTC).timestamp()
    with pytest.raises(BatchInputError, match="not an ISO date-time"):
        Routing(deadline="tomorrow").resolve_deadline(_context(), as_path(str(tmp_path / "b")))
    with pytest.raises(BatchInputError, match="no time zone"):
        Routing(deadline="2026-12-08T07:00").resolve_deadline(_context(), as_path(str(tmp_path / "c")))


def test_without_a_deadline_nothing_is_resolved_or_written(tmp_path: Path) -> None:
    assert Routing().resolve_deadline(_context(), as_path(str(tmp_path))) == (None, False)
    assert not any(tmp_path.iterdir())


def test_a_deadline_changed_in_the_dag_is_resolved_again_from_the_first_try(tmp_path: Path) -> None:
    rounds = as_path(str(tmp_path / "rounds"))
    Routing(deadline=timedelta(hours=7)).resolve_deadline(_context(), rounds)
    later = _context(STARTED + timedelta(hours=2))
    assert Routing(deadline=timedelta(hours=9)).resolve_deadline(later, rounds) == (
        (STARTED + timedelta(hours=9)).timestamp(),
        False,  # not the first look: batches may exist, so it is never refused as unmeetable
    )


def test_a_refused_deadline_is_forgotten_so_a_fixed_dag_starts_afresh(tmp_path: Path) -> None:
    rounds = as_path(str(tmp_path / "rounds"))
    routing = Routing(deadline=timedelta(minutes=1))
    routing.resolve_deadline(_context(), rounds)
    routing.forget_deadline(rounds)
    assert routing.resolve_deadline(_context(), rounds)[1] is True
