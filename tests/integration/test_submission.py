"""The submitter against the emulator, step by step: what it adopts and what it refuses to adopt."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from airflow_provider_claude_batch.emulator import EmulatorControl
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.input.read import iter_jsonl
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.plan import plan_batches
from airflow_provider_claude_batch.storage import as_path
from airflow_provider_claude_batch.submit.create import Submitter
from airflow_provider_claude_batch.submit.path_store import PathRecordStore
from airflow_provider_claude_batch.submit.policy import CreatePolicy
from airflow_provider_claude_batch.submit.record import TaskKey
from tests.helpers import make_requests

KEY = TaskKey("dag", "submit", "manual__1")
POLICY = CreatePolicy(reconcile_seconds=0.5, reconcile_poll_seconds=0.1, backoff_seconds=0.05)


def _setup(tmp_path: Path, count: int, max_requests: int) -> tuple[Submitter, object, list[object]]:
    prepared, _, _ = prepare_requests(list(enumerate(make_requests(count), 1)))
    plans = plan_batches(prepared, max_requests=max_requests)
    submitter = Submitter(ClaudeBatchHook(), PathRecordStore(as_path(str(tmp_path))), POLICY)
    return submitter, prepared, plans  # type: ignore[return-value]


def test_an_intent_without_a_batch_creates_after_looking(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    submitter, prepared, plans = _setup(tmp_path, 2, 100)
    record = submitter.open_record(KEY, prepared, plans, force_resubmit=False, attempt_id="a")  # type: ignore[arg-type]
    record = record.with_intent(0, time.time())
    submitter.ledger.save(record)
    started = time.monotonic()
    record = submitter.submit_part(record, record.parts[0], prepared, plans[0])  # type: ignore[arg-type]
    assert time.monotonic() - started >= 0.4  # it gave the lost create time to show up first
    assert control.state()["batches_created"] == 1
    assert submitter.ledger.load(KEY).batch_ids == record.batch_ids  # type: ignore[union-attr]


def test_a_batch_already_claimed_by_another_part_is_never_adopted(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    submitter, prepared, plans = _setup(tmp_path, 4, 2)
    record = submitter.open_record(KEY, prepared, plans, force_resubmit=False, attempt_id="a")  # type: ignore[arg-type]
    record = submitter.submit_part(record, record.parts[0], prepared, plans[0])  # type: ignore[arg-type]
    record = record.with_intent(1, time.time())
    record = submitter.submit_part(record, record.parts[1], prepared, plans[1])  # type: ignore[arg-type]
    assert len(set(record.batch_ids)) == 2
    assert control.state()["batches_created"] == 2
    assert [b["custom_ids"] for b in control.state()["batches"]] == [["req-0", "req-1"], ["req-2", "req-3"]]


def test_a_500_on_create_looks_before_retrying(claude_conn: str, control: EmulatorControl, tmp_path: Path) -> None:
    submitter, prepared, plans = _setup(tmp_path, 3, 100)
    record = submitter.open_record(KEY, prepared, plans, force_resubmit=False, attempt_id="a")  # type: ignore[arg-type]
    control.inject({"endpoint": "create", "status": 500})
    record = submitter.submit_part(record, record.parts[0], prepared, plans[0])  # type: ignore[arg-type]
    state = control.state()
    assert state["calls"]["create"] == 2 and state["batches_created"] == 1
    assert state["calls"]["list"] >= 1
    assert record.batch_ids == [state["batches"][0]["id"]]


def test_a_record_with_the_pre_release_fingerprint_is_a_different_input_submitted_anew(
    claude_conn: str, control: EmulatorControl, tmp_path: Path
) -> None:
    """A record holding the pre-release fingerprint (the sha256 of every request re-encoded, without
    the version prefix) does not match any input now: the retry starts a new record and submits, and
    the earlier batch is left as it is (not canceled). The same input and record form re-attach."""
    source = tmp_path / "requests.jsonl"
    source.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in make_requests(5)))
    submitter = Submitter(ClaudeBatchHook(), PathRecordStore(as_path(str(tmp_path / "ledger"))), POLICY)
    earlier, _, _ = prepare_requests(list(iter_jsonl(source.read_bytes().splitlines())))  # every request re-encoded
    pre_release = hashlib.sha256(earlier.buffer).hexdigest()
    plans = plan_batches(earlier)
    record = submitter.open_record(KEY, earlier, plans, force_resubmit=False, attempt_id="a")
    record = submitter.submit_part(record, record.parts[0], earlier, plans[0])
    submitter.ledger.save(dataclasses.replace(record, fingerprint=pre_release))

    with source.open("rb") as handle:
        retried, _, _ = prepare_requests(iter_jsonl(handle))
    assert retried.as_written == 5 and not retried.recognises(pre_release)
    reopened = submitter.open_record(KEY, retried, plan_batches(retried), force_resubmit=False, attempt_id="b")
    assert reopened.batch_ids == [] and reopened.fingerprint == retried.fingerprint
    resubmitted = submitter.submit_part(reopened, reopened.parts[0], retried, plan_batches(retried)[0])
    state = control.state()
    assert state["batches_created"] == 2 and resubmitted.batch_ids != record.batch_ids
    assert not any(batch["canceled"] for batch in state["batches"])
    again = submitter.open_record(KEY, retried, plan_batches(retried), force_resubmit=False, attempt_id="c")
    assert again.batch_ids == resubmitted.batch_ids  # its own record: re-attached, nothing paid twice

    source.write_bytes(source.read_bytes().replace(b'"req-4"', b'"req-5"'))
    with source.open("rb") as handle:
        changed, _, _ = prepare_requests(iter_jsonl(handle))
    assert (
        submitter.open_record(KEY, changed, plan_batches(changed), force_resubmit=False, attempt_id="d").batch_ids == []
    )
