"""The steps' decisions, with a fake hook: what Submission does with an existing record, Waiting's
deferral vs in-task choice, Landing's re-use of a landed manifest, on_kill's cancel on user intent only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.output.landing import Landing, landed_manifest
from airflow_provider_claude_batch.submit.path_store import PathRecordStore
from airflow_provider_claude_batch.submit.policy import CreatePolicy
from airflow_provider_claude_batch.submit.submission import QueuePolicy, Submission
from airflow_provider_claude_batch.wait.waiting import Waiting, WaitPolicy
from tests.unit.operators.fakes import Deferred, FakeHook, FakeTask, FakeTI

FAST = CreatePolicy(claim_settle_seconds=0.0, claim_poll_seconds=0.01)


def _store(tmp_path: Path) -> PathRecordStore:
    from airflow_provider_claude_batch.storage import as_path

    return PathRecordStore(as_path(str(tmp_path / "state")), settle_seconds=0)


def _requests(n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "params": {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        }
        for i in range(n)
    ]


def _submit(step: Submission, hook: FakeHook, store: PathRecordStore, attempt: str) -> list[str]:
    context: Any = {"ti": FakeTI(attempt)}
    prepared, plans = step.prepare(context)
    submitter, record = step.open(hook, store, context, prepared, plans)  # type: ignore[arg-type]
    record = step.submit_parts(
        FakeTask(), submitter, record, prepared, plans, on_part=lambda r: None, resume_with="x", error_budget=1
    )
    return record.batch_ids


def test_a_retry_with_the_same_input_re_attaches_and_creates_nothing(tmp_path: Path) -> None:
    hook, store = FakeHook(), _store(tmp_path)
    step = Submission(requests=_requests(3), max_requests_per_batch=2, create_policy=FAST)
    first = _submit(step, hook, store, "attempt-1")
    assert len(first) == 2 and hook.created == first
    assert _submit(step, hook, store, "attempt-2") == first
    assert hook.created == first, "a retry must not pay twice"


def test_changed_input_or_force_resubmit_submits_anew(tmp_path: Path) -> None:
    hook, store = FakeHook(), _store(tmp_path)
    first = _submit(Submission(requests=_requests(2), create_policy=FAST), hook, store, "attempt-1")
    changed = _submit(Submission(requests=_requests(3), create_policy=FAST), hook, store, "attempt-2")
    forced = _submit(Submission(requests=_requests(3), force_resubmit=True, create_policy=FAST), hook, store, "a-3")
    assert len({*first, *changed, *forced}) == 3


def test_a_full_queue_defers_before_creating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_claude_batch.submit import queue_room

    monkeypatch.setattr(queue_room, "queued_requests", lambda hook: 9)
    hook, store = FakeHook(), _store(tmp_path)
    step = Submission(requests=_requests(2), queue=QueuePolicy(max_queued_requests=10), create_policy=FAST)
    with pytest.raises(Deferred) as deferred:
        _submit(step, hook, store, "attempt-1")
    assert deferred.value.method_name == "x" and hook.created == []
    assert deferred.value.trigger.serialize()[1]["max_queued"] == 10


def test_waiting_skips_the_triggerer_when_the_batches_already_ended() -> None:
    hook = FakeHook({"msgbatch_a": "ended", "msgbatch_b": "ended"})
    waiting = Waiting(deferrable=True)
    assert waiting.choose(hook, ["msgbatch_a", "msgbatch_b"]) == "ended"  # type: ignore[arg-type]
    assert waiting.wait(FakeTask(), hook, ["msgbatch_a"], [None], resume_with="r") == ["msgbatch_a"]  # type: ignore[arg-type]


def test_waiting_defers_with_the_trigger_contract_or_waits_in_the_task() -> None:
    hook = FakeHook({"msgbatch_a": "ended", "msgbatch_b": "in_progress"})
    assert Waiting(deferrable=False).choose(hook, ["msgbatch_a", "msgbatch_b"]) == "in_task"  # type: ignore[arg-type]
    waiting = Waiting(conn_id="c", deferrable=True, poll_interval=2, policy=WaitPolicy(error_budget=7))
    with pytest.raises(Deferred) as deferred:
        waiting.wait(FakeTask(), hook, ["msgbatch_b"], [1000.0], resume_with="resume")  # type: ignore[arg-type]
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "airflow_provider_claude_batch.triggers.claude_batch.ClaudeBatchTrigger"
    assert (deferred.value.method_name, kwargs["conn_id"], kwargs["poll_interval"], kwargs["error_budget"]) == (
        "resume",
        "c",
        2.0,
        7.0,
    )
    assert kwargs["deadline"] == 1000.0 + 24 * 3600 + 3600


def test_the_wait_deadline_is_the_policys_timeout_when_sooner() -> None:
    from datetime import timedelta

    waiting = Waiting(policy=WaitPolicy(timeout=timedelta(minutes=5)))
    assert waiting.deadline([50_000.0], now=100.0) == 400.0


def test_an_odd_trigger_event_is_an_error_never_a_success() -> None:
    from airflow_provider_claude_batch.exceptions import BatchApiError

    with pytest.raises(BatchApiError, match="without a usable answer"):
        Waiting().finish(FakeHook(), None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "cancel_on_kill", "expect"),
    [("failed", True, True), ("running", True, False), ("success", True, False), ("failed", False, False)],
)
def test_on_kill_cancels_only_when_a_user_marked_the_task_failed(
    state: str, cancel_on_kill: bool, expect: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_claude_batch import _compat

    monkeypatch.setattr(_compat, "current_task_state", lambda ti: state)
    hook = FakeHook({"msgbatch_a": "in_progress", "msgbatch_b": "ended"})
    waiting = Waiting(cancel_on_kill=cancel_on_kill)
    context: Any = {"ti": FakeTI()}
    assert waiting.cancel_if_user_failed_the_task(hook, ["msgbatch_a", "msgbatch_b"], context) is expect  # type: ignore[arg-type]
    assert hook.canceled == (["msgbatch_a"] if expect else [])


def test_on_kill_cancels_nothing_when_the_state_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_claude_batch import _compat

    def unknown(ti: object) -> str:
        raise RuntimeError("API server unreachable")

    monkeypatch.setattr(_compat, "current_task_state", unknown)
    hook = FakeHook({"msgbatch_a": "in_progress"})
    assert not Waiting(cancel_on_kill=True).cancel_if_user_failed_the_task(hook, ["msgbatch_a"], {"ti": FakeTI()})  # type: ignore[arg-type]
    assert hook.canceled == []


def test_a_landed_round_is_re_used_only_for_the_same_batches(tmp_path: Path) -> None:
    from airflow_provider_claude_batch.storage import as_path

    folder = as_path(str(tmp_path))
    assert landed_manifest(folder, ["msgbatch_a"]) is None
    (tmp_path / "_manifest.json").write_text(json.dumps({"batches": [{"id": "msgbatch_a"}], "requests": 3}))
    assert landed_manifest(folder, ["msgbatch_a"]) == {"batches": [{"id": "msgbatch_a"}], "requests": 3}
    assert landed_manifest(folder, ["msgbatch_a", "msgbatch_b"]) is None


def test_the_failure_policy_applies_after_landing_and_the_summary_is_small(tmp_path: Path) -> None:
    from airflow_provider_claude_batch.exceptions import TooManyFailuresError
    from airflow_provider_claude_batch.storage import as_path

    manifest = {
        "output_path": str(tmp_path),
        "requests": 10,
        "counts": {"succeeded": 8, "errored": 2},
        "failed": 2,
        "failed_fraction": 0.2,
        "usage_total": {},
        "cost": {},
        "batches": [{"id": "msgbatch_a"}],
    }
    summary = Landing().summary(manifest, as_path(str(tmp_path)), ["msgbatch_a"])
    assert "batches" not in summary and summary["batch_ids"] == ["msgbatch_a"]
    with pytest.raises(TooManyFailuresError, match="landed under"):
        Landing(max_failed_fraction=0.1).summary(manifest, as_path(str(tmp_path)), ["msgbatch_a"])


def test_rounds_refuse_a_format_they_would_not_write() -> None:
    from airflow_provider_claude_batch.exceptions import BatchInputError

    with pytest.raises(BatchInputError, match="one-task flow writes jsonl and csv"):
        Landing(formats=("parquet",)).refuse_unwritable_round_formats()
