"""The deadline guard's steps with a fake hook: wait until the switch time, then cancel deliberately
(the reason written first, each batch once), and never cancel for a timeout that was not the guard's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.operators.rounds import GUARD_FILE, Rounds
from airflow_provider_claude_batch.output.landing import Landing
from airflow_provider_claude_batch.storage import as_path
from airflow_provider_claude_batch.submit.submission import Submission
from airflow_provider_claude_batch.sync.routing import Routing
from airflow_provider_claude_batch.wait.deadline import SwitchPlan
from airflow_provider_claude_batch.wait.events import WaitOutcome
from airflow_provider_claude_batch.wait.waiting import Waiting
from tests.unit.operators.fakes import Deferred, FakeHook, FakeTask


def _rounds(tmp_path: Path, hook: FakeHook, timed_out: WaitOutcome | None = None) -> Rounds:
    return Rounds(
        task=FakeTask(),
        hook=hook,  # type: ignore[arg-type]
        submission=Submission(requests=[]),
        waiting=Waiting(deferrable=True),
        landing=Landing(),
        output=as_path(str(tmp_path)),
        max_retry_rounds=0,
        on_batches=lambda ids: None,
        routing=Routing(deadline="2030-01-01T00:00:00+00:00"),
        timed_out=timed_out,
    )


def _switch(in_seconds: float) -> SwitchPlan:
    # 8 requests, 8 in flight, 10 s each, 20 s to land: the switch is 30 s before the deadline.
    return SwitchPlan(time.time() + in_seconds + 30, 8, 8, 10.0, 20.0)


def test_before_the_switch_time_the_wait_defers_until_it(tmp_path: Path) -> None:
    hook = FakeHook({"msgbatch_a": "in_progress"})
    switch = _switch(600)
    with pytest.raises(Deferred) as deferred:
        _rounds(tmp_path, hook)._wait(["msgbatch_a"], [time.time()], switch, as_path(str(tmp_path)))
    assert deferred.value.trigger.deadline == switch.switch_at
    assert hook.canceled == [] and not (tmp_path / GUARD_FILE).exists()


def test_at_the_switch_time_running_batches_are_canceled_once_with_the_reason_written_first(tmp_path: Path) -> None:
    hook = FakeHook({"msgbatch_a": "in_progress", "msgbatch_b": "ended"})
    rounds = _rounds(tmp_path, hook)
    switch = _switch(-1)
    with pytest.raises(Deferred):  # then waits for the canceled batch to end
        rounds._wait(["msgbatch_a", "msgbatch_b"], [time.time()], switch, as_path(str(tmp_path)))
    assert hook.canceled == ["msgbatch_a"]  # an ended batch is left alone
    guard = json.loads((tmp_path / GUARD_FILE).read_text())
    assert guard["batch_ids"] == ["msgbatch_a"] and guard["reason"].startswith("deadline guard")
    # A retry (the batch still canceling) re-attaches: no second cancel.
    with pytest.raises(Deferred):
        rounds._wait(["msgbatch_a", "msgbatch_b"], [time.time()], switch, as_path(str(tmp_path)))
    assert hook.canceled == ["msgbatch_a"]


def test_a_timeout_before_the_switch_time_is_the_waits_own_and_cancels_nothing(tmp_path: Path) -> None:
    from airflow_provider_claude_batch.exceptions import BatchInFlightError

    hook = FakeHook({"msgbatch_a": "in_progress"})
    outcome = WaitOutcome("timeout", ["msgbatch_a"], {}, "The wait deadline passed before every batch ended.")
    with pytest.raises(BatchInFlightError):
        _rounds(tmp_path, hook, outcome)._wait(["msgbatch_a"], [time.time()], _switch(600), as_path(str(tmp_path)))
    assert hook.canceled == []


def test_an_error_event_of_the_trigger_fails_the_try_and_cancels_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from airflow_provider_claude_batch.exceptions import BatchApiError
    from airflow_provider_claude_batch.operators import one_task
    from airflow_provider_claude_batch.operators.one_task import ClaudeBatchOperator

    hook = FakeHook({"msgbatch_a": "in_progress"})
    monkeypatch.setattr(one_task, "make_hook", lambda conn_id: hook)
    operator = ClaudeBatchOperator(
        task_id="t", requests=[], output_path="/tmp/unused", deadline=timedelta(hours=1), cancel_on_kill=True
    )
    event: Any = WaitOutcome("error", ["msgbatch_a"], {}, "API down for 3 h", "unavailable").to_payload()
    with pytest.raises(BatchApiError):
        operator.resume({}, event)  # type: ignore[arg-type]
    assert hook.canceled == []
