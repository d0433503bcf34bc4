"""The deadline guard's arithmetic: the switch time, a deadline that cannot be met, the under-24 h note."""

from __future__ import annotations

import pytest

from airflow_provider_claude_batch.wait.deadline import SwitchPlan, utc_clock

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def test_the_switch_time_leaves_room_to_send_every_request_and_land_before_the_deadline() -> None:
    # 2,000 requests, 8 in flight, 20 s each: 250 waves + 1 (the first call of each cached prefix goes
    # alone) x 20 s = 5,020 s; 300 s to land.
    plan = SwitchPlan(NOW + 7 * 3600, 2000, 8, 20.0, 300.0)
    assert plan.sync_seconds == 5020
    assert plan.switch_at == NOW + 7 * 3600 - 300 - 5020
    assert not plan.switch_due(NOW) and plan.switch_due(plan.switch_at)
    assert plan.meetable(NOW)
    assert "2000 requests / 8 in flight + 1 for the first call of each cached prefix = 251 waves x 20 s each = " in (
        plan.arithmetic()
    )


def test_a_partial_wave_costs_a_whole_latency_and_a_prefix_s_first_call_one_more() -> None:
    assert SwitchPlan(NOW, 9, 8, 10.0, 0.0).sync_seconds == 30  # 8 then 1: two waves, + the first call's
    assert SwitchPlan(NOW, 8, 8, 10.0, 0.0).sync_seconds == 20  # the first call alone, then the other 7
    assert SwitchPlan(NOW, 1, 8, 10.0, 0.0).sync_seconds == 10  # one call: nothing waits for it


@pytest.mark.parametrize(
    ("hours", "concurrency", "meetable"),
    [(1.0, 8, False), (1.5, 8, True), (0.5, 32, True), (0.1, 32, False)],
)
def test_a_deadline_not_even_the_messages_api_can_meet_is_refused(
    hours: float, concurrency: int, meetable: bool
) -> None:
    # 1,000 requests x 30 s: 8 in flight need 3,780 s, 32 in flight 990 s; plus 300 s to land.
    assert SwitchPlan(NOW + hours * 3600, 1000, concurrency, 30.0, 300.0).meetable(NOW) is meetable


def test_under_24_hours_the_log_says_the_guard_is_what_makes_it_safe() -> None:
    note = SwitchPlan(NOW + 7 * 3600, 10, 8, 1.0, 1.0).guard_note(NOW)
    assert note is not None and "7.0 h away" in note and "guard" in note
    assert SwitchPlan(NOW + 25 * 3600, 10, 8, 1.0, 1.0).guard_note(NOW) is None


def test_times_are_logged_in_utc() -> None:
    assert utc_clock(NOW) == "2027-01-15 08:00:00 UTC"
