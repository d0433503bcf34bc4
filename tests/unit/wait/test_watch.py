"""A trigger's wait as the shared poller drives it: when its polls are due, what wakes the trigger."""

from __future__ import annotations

import asyncio
import logging
import random

import httpx2
import pytest

from airflow_provider_claude_batch.wait.watch import Watch
from tests.unit.wait.test_tracker import shot, tracker


def watch(progress: bool = False, **overrides: object) -> Watch:
    settings: dict[str, object] = {"poll_interval": 10.0, "max_poll_interval": 10.0, "rng": random.Random(3)}
    settings.update(overrides)
    return Watch(tracker(**settings), due=0.0, deadline=1_000.0, patience=2.0, progress=progress)


class _Status(Exception):
    """An API error as the SDK raises it: a status code and the response (with its retry-after)."""

    def __init__(self, status_code: int, retry_after: str | None = None) -> None:
        super().__init__(f"status {status_code}")
        self.status_code = status_code
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        self.response = httpx2.Response(status_code, headers=headers)


def test_a_quiet_answer_schedules_the_next_poll_from_the_read_without_waking_the_trigger() -> None:
    w = watch()
    assert w.joins(0.0) and w.before_poll(now=0.0)
    woke = w.after_answer([shot("a"), shot("b")], read_at=100.0, now=100.0)
    assert not woke and w.lines == [] and w.outcome is None
    assert 109.0 <= w.due <= 110.0  # the jittered delay, from when the cycle read the batches
    assert w.patience == pytest.approx(0.2 * (w.due - 100.0))
    assert w.start_by(alone=False) == pytest.approx(w.due + w.patience)
    assert w.start_by(alone=True) == w.due


def test_a_poll_joins_a_cycle_that_others_start_up_to_half_its_delay_early() -> None:
    w = watch()
    w.after_answer([shot("a"), shot("b")], read_at=100.0, now=100.0)
    delay = w.due - 100.0
    assert not w.joins(w.due - delay / 2 - 0.01)
    assert w.joins(w.due - delay / 2 + 0.01)


def test_a_retry_after_an_error_honours_retry_after_and_never_joins_early() -> None:
    w = watch()
    woke = w.after_error(_Status(429, "7"), "429 rate_limit_error", now=100.0, loop_now=50.0)
    assert woke and w.due == 57.0 and w.early == 0.0
    assert not w.joins(56.9) and w.joins(57.0)
    ((level, line),) = w.lines
    assert level == logging.WARNING
    assert line == "Polling failed (429 rate_limit_error), attempt 1; retrying in 7.0 s. The batches keep running."


def test_a_refusal_ends_the_wait_and_wakes_the_trigger() -> None:
    w = watch()
    assert w.after_error(_Status(401), "401 authentication_error", now=100.0, loop_now=50.0)
    assert w.over and w.outcome is not None and w.outcome.error_kind == "refused"
    assert not w.joins(10_000.0)  # never polled again


def test_progress_lines_wake_the_trigger_only_when_something_changed_or_ten_minutes_passed() -> None:
    w = watch(progress=True)
    assert w.after_answer([shot("a"), shot("b")], read_at=0.0, now=0.0)  # the first answer is news
    assert [level for level, _ in w.lines] == [logging.INFO]
    w.lines.clear()
    assert not w.after_answer([shot("a"), shot("b")], read_at=10.0, now=10.0)
    assert w.after_answer([shot("a"), shot("b")], read_at=610.0, now=610.0)
    w.lines.clear()
    assert w.after_answer([shot("a", "ended"), shot("b", "ended")], read_at=620.0, now=620.0)
    assert w.outcome is not None and w.outcome.status == "ended" and len(w.lines) == 1


def test_the_deadline_ends_the_wait_before_a_poll_and_caps_how_long_a_poll_may_wait() -> None:
    w = watch(deadline=105.0)
    w.deadline = 55.5  # the loop time of the tracker's wall-clock deadline
    w.after_answer([shot("a"), shot("b")], read_at=50.0, now=100.0)
    assert w.due == pytest.approx(55.0)  # the delay stops at the deadline
    assert w.start_by(alone=False) == 55.5  # and waiting for other polls does not go past it
    assert not w.before_poll(now=105.0)
    assert w.outcome is not None and w.outcome.status == "timeout"


async def test_news_sleeps_until_there_is_something_to_log_or_the_wait_is_over() -> None:
    w = watch(progress=True)
    waiting = asyncio.create_task(w.news())
    await asyncio.sleep(0)
    assert w.after_answer([shot("a"), shot("b")], read_at=0.0, now=0.0)
    assert [level for level, _ in await waiting] == [logging.INFO]
    waiting = asyncio.create_task(w.news())
    await asyncio.sleep(0)
    w.fail(RuntimeError("the poll cycle broke"))
    with pytest.raises(RuntimeError, match="the poll cycle broke"):
        await waiting
