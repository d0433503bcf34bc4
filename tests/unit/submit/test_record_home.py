"""The pure rules behind the submission record: where it lives, claims, staleness, merging."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_provider_claude_batch.exceptions import BatchInputError, StateNotSharedError
from airflow_provider_claude_batch.submit.record import (
    Claim,
    PartRecord,
    SubmissionRecord,
    TaskKey,
    claim_is_stale,
    part_claim,
    successor_claim,
)
from airflow_provider_claude_batch.submit.store import choose_record_home, is_local_executor, settled_claim


@pytest.mark.parametrize(
    ("setting", "local"),
    [
        ("LocalExecutor", True),
        ("SequentialExecutor", True),
        ("airflow.executors.local_executor.LocalExecutor", True),
        ("LocalExecutor, SequentialExecutor", True),
        ("CeleryExecutor", False),
        ("KubernetesExecutor", False),
        ("CeleryExecutor,KubernetesExecutor", False),
        ("LocalExecutor,CeleryExecutor", False),  # a multi-executor list with any remote executor
        ("fast:my.pkg.LocalExecutor,slow:my.pkg.EdgeExecutor", False),
        ("", False),
    ],
)
def test_only_executors_on_the_schedulers_machine_count_as_local(setting: str, local: bool) -> None:
    assert is_local_executor(setting) is local


def test_the_record_home_rule() -> None:
    choose = choose_record_home
    assert (
        choose(state_path="s3://b/s", store_available=True, clear_on_success=False, executor="CeleryExecutor") == "path"
    )
    assert (
        choose(state_path=None, store_available=True, clear_on_success=False, executor="CeleryExecutor")
        == "task_state_store"
    )
    assert (
        choose(state_path=None, store_available=False, clear_on_success=False, executor="LocalExecutor") == "local_disk"
    )
    assert (
        choose(state_path=None, store_available=True, clear_on_success=True, executor="LocalExecutor") == "local_disk"
    )
    for store, clear in ((False, False), (True, True)):
        with pytest.raises(StateNotSharedError) as refused:
            choose(state_path=None, store_available=store, clear_on_success=clear, executor="CeleryExecutor")
        assert isinstance(refused.value, BatchInputError)  # the not-retried family
        assert "[claude_batch] state_path" in str(refused.value) and "CeleryExecutor" in str(refused.value)
        assert ("clear_on_success" in str(refused.value)) is clear


def test_a_settled_claim_is_lost_to_a_rival_write_during_the_settle_time() -> None:
    register: dict[str, Claim] = {}

    def rival_writes(_: float) -> None:  # the rival read "free" before our write and writes after it
        register["c"] = Claim("b", 2.0)

    won = settled_claim(
        lambda: register.get("c"), lambda c: register.__setitem__("c", c), Claim("a", 1.0), 1.0, sleep=rival_writes
    )
    assert won.holder == "b"
    assert (
        settled_claim(
            lambda: register.get("c"),
            lambda c: register.__setitem__("c", c),
            Claim("c", 3.0),
            1.0,
            sleep=lambda _: None,
        ).holder
        == "b"
    )  # held: no write at all
    free: dict[str, Claim] = {}
    assert (
        settled_claim(
            lambda: free.get("c"), lambda c: free.__setitem__("c", c), Claim("a", 1.0), 1.0, sleep=lambda _: None
        ).holder
        == "a"
    )


def _record(**changes: object) -> SubmissionRecord:
    parts = (PartRecord(0, 2, 10, "a", "b"), PartRecord(1, 2, 10, "c", "d"))
    record = SubmissionRecord(TaskKey("d", "t", "r"), "fp", parts, 100.0, 100.0, "try1", "abc")
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def test_claims_are_named_per_record_part_and_generation_and_go_stale_without_writes() -> None:
    record = _record()
    assert part_claim(record, 1, 0) != part_claim(record, 0, 0) != part_claim(record, 0, 1)
    assert part_claim(record, 0, 0) != part_claim(_record(record_id="other"), 0, 0)
    assert successor_claim(None) == "record-after-none" and "abc" in successor_claim(record)
    older = _record(record_id="")  # a record written before claims: named by its creation time
    assert older.identity and older.identity != record.identity
    claim = Claim("try1", 100.0)
    assert not claim_is_stale(claim, record, now=150.0, stale_after=60.0)
    assert claim_is_stale(claim, record, now=161.0, stale_after=60.0)
    assert not claim_is_stale(claim, _record(updated_at=140.0), now=161.0, stale_after=60.0)  # the holder wrote


def test_saving_over_a_concurrent_save_never_loses_a_batch_id() -> None:
    mine = _record().with_intent(1, 5.0)
    theirs = _record().with_batch(0, "msgbatch_0", 7.0)
    merged = mine.merged_with(theirs)
    assert merged.parts[0].batch_id == "msgbatch_0" and merged.parts[1].intent_at == 5.0
    assert SubmissionRecord.from_dict(merged.to_dict()) == merged
    with pytest.raises(ValueError, match="JSON object"):
        SubmissionRecord.from_dict(["not", "a", "record"])
