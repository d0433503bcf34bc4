"""Each operator takes only its own parameters, and rejects bad values before the DAG runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_claude_batch.operators.claude_batch import (
    ClaudeBatchOperator,
    ClaudeBatchResultsOperator,
    ClaudeBatchSubmitOperator,
    LandingPolicy,
    QueuePolicy,
    Submission,
    WaitPolicy,
)
from airflow_provider_claude_batch.sensors.claude_batch import ClaudeBatchSensor

LAND: dict[str, Any] = {"task_id": "land", "batch_ids": "msgbatch_a", "output_path": "/tmp/out"}


@pytest.mark.parametrize(
    ("make", "foreign", "where"),
    [
        (lambda **kw: ClaudeBatchResultsOperator(**LAND, **kw), {"rows": [{"id": "a"}]}, "resubmit=Submission"),
        (lambda **kw: ClaudeBatchResultsOperator(**LAND, **kw), {"model": "m"}, "submit parameter"),
        (lambda **kw: ClaudeBatchSubmitOperator(task_id="s", requests=[], **kw), {"output_path": "/x"}, "landing"),
        (lambda **kw: ClaudeBatchSubmitOperator(task_id="s", requests=[], **kw), {"formats": ["csv"]}, "landing"),
        (lambda **kw: ClaudeBatchSensor(task_id="w", batch_ids="msgbatch_a", **kw), {"requests": []}, "submit"),
        (lambda **kw: ClaudeBatchSensor(task_id="w", batch_ids="msgbatch_a", **kw), {"output_path": "/x"}, "landing"),
        (lambda **kw: ClaudeBatchOperator(task_id="o", output_path="/x", **kw), {"batch_ids": "b"}, "results"),
    ],
)
def test_a_parameter_of_another_role_is_a_type_error_that_says_where_it_belongs(
    make: object, foreign: dict[str, Any], where: str
) -> None:
    with pytest.raises(TypeError, match=where):
        make(**foreign)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"max_queued_requests": 5}, "queue=QueuePolicy"),
        ({"queue_check_interval": 5}, "queue=QueuePolicy"),
        ({"polling_error_budget": 5}, "wait_policy=WaitPolicy"),
        ({"max_poll_interval": 5}, "wait_policy=WaitPolicy"),
        ({"wait_timeout": timedelta(1)}, "wait_policy=WaitPolicy"),
    ],
)
def test_an_old_spelling_names_its_new_place(old: dict[str, Any], new: str) -> None:
    with pytest.raises(TypeError, match=new):
        ClaudeBatchSubmitOperator(task_id="s", requests=[], **old)


def test_landing_knobs_moved_into_the_landing_policy() -> None:
    with pytest.raises(TypeError, match="landing_policy=LandingPolicy"):
        ClaudeBatchOperator(task_id="o", output_path="/x", price_overrides={})


def test_an_unknown_parameter_is_still_airflows_type_error() -> None:
    with pytest.raises(TypeError, match="Invalid arguments"):
        ClaudeBatchResultsOperator(**LAND, no_such_thing=1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClaudeBatchSubmitOperator(task_id="s", max_requests_per_batch=0), "max_requests_per_batch"),
        (lambda: ClaudeBatchSubmitOperator(task_id="s", max_batch_bytes=300_000_000), "max_batch_bytes"),
        (lambda: ClaudeBatchSubmitOperator(task_id="s", max_tokens=0), "max_tokens"),
        (lambda: ClaudeBatchSubmitOperator(task_id="s", poll_interval=0), "poll_interval"),
        (lambda: QueuePolicy(max_queued_requests=0), "max_queued_requests"),
        (lambda: WaitPolicy(error_budget=-1), "error_budget"),
        (lambda: WaitPolicy(timeout=timedelta(0)), "timeout"),
        (lambda: LandingPolicy(expiry_warning=timedelta(-1)), "expiry_warning"),
        (lambda: ClaudeBatchResultsOperator(**LAND, max_failed_fraction=5), "fraction"),
        (lambda: ClaudeBatchOperator(task_id="o", output_path="/x", max_retry_rounds=-1), "max_retry_rounds"),
        (lambda: ClaudeBatchResultsOperator(**LAND, max_retry_rounds=2), "resubmit"),
        (lambda: ClaudeBatchResultsOperator(**LAND, resubmit=Submission(requests=[])), "max_retry_rounds"),
        (
            lambda: ClaudeBatchSensor(task_id="w", batch_ids="b", wait_policy=WaitPolicy(timeout=timedelta(1))),
            "timeout",
        ),
    ],
)
def test_bad_values_are_refused_when_the_dag_is_parsed(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_the_steps_hold_what_the_operators_were_given() -> None:
    op = ClaudeBatchOperator(
        task_id="o",
        output_path="/x",
        requests_path="/in/{{ ds }}.jsonl",
        model="m",
        storage_conn_id="aws",
        queue=QueuePolicy(max_queued_requests=10),
        deferrable=True,
        poll_interval=1,
        formats=["jsonl", "csv"],
        landing_policy=LandingPolicy(expiry_warning=timedelta(days=1)),
    )
    assert (op.submission.requests_path, op.submission.model, op.submission.storage_conn_id) == (
        "/in/{{ ds }}.jsonl",
        "m",
        "aws",
    )
    assert op.submission.queue == QueuePolicy(max_queued_requests=10)
    assert (op.waiting.deferrable, op.waiting.poll_interval, op.waiting.cancel_on_kill) == (True, 1, True)
    assert op.landing.formats == ("jsonl", "csv")
    assert "requests_path" in type(op.submission).template_fields


def test_the_results_operators_resubmission_uses_its_storage_connection_by_default() -> None:
    op = ClaudeBatchResultsOperator(
        **LAND, storage_conn_id="aws", max_retry_rounds=1, resubmit=Submission(requests=[], model="m")
    )
    assert op.resubmit is not None and op.resubmit.storage_conn_id == "aws"


def test_every_public_parameter_is_documented() -> None:
    import dataclasses
    import inspect

    for cls in (ClaudeBatchSubmitOperator, ClaudeBatchResultsOperator, ClaudeBatchOperator, ClaudeBatchSensor):
        names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "kwargs")]
        if cls is ClaudeBatchOperator:  # the signature lists the submit step's fields (takes_step_fields)
            assert {f.name for f in dataclasses.fields(Submission)} <= set(names)
        missing = [n for n in names if f":param {n}:" not in (cls.__doc__ or "")]
        assert not missing, (cls.__name__, missing)


def test_the_one_task_operator_lists_the_submit_parameters_for_default_args_and_expand() -> None:
    """Airflow reads parameters from the signature: default_args and .expand() must reach the submit step."""
    from airflow.sdk import DAG

    with DAG("signature", schedule=None, default_args={"model": "claude-from-default-args", "max_tokens": 64}):
        op = ClaudeBatchOperator(task_id="one", output_path="/tmp/out", requests_path="/tmp/in.jsonl")
        mapped = ClaudeBatchOperator.partial(task_id="mapped", output_path="/tmp/out").expand(
            requests_path=["/tmp/a.jsonl", "/tmp/b.jsonl"]
        )
    assert op.submission.model == "claude-from-default-args" and op.submission.max_tokens == 64
    assert mapped.expand_input.value == {"requests_path": ["/tmp/a.jsonl", "/tmp/b.jsonl"]}
    with pytest.raises(TypeError, match="not_a_parameter"):
        ClaudeBatchOperator.partial(task_id="bad", output_path="/tmp/out").expand(not_a_parameter=[1])


def test_a_text_queue_is_airflows_executor_queue_not_the_queue_policy() -> None:
    """Airflow 3.0's mapped operators pass BaseOperator's `queue` ("default") from their defaults."""
    from airflow_provider_claude_batch.submit.submission import QueuePolicy

    celery = ClaudeBatchOperator(task_id="o", output_path="/x", requests=[], queue="claude-workers")
    assert celery.queue == "claude-workers" and celery.submission.queue is None
    paced = ClaudeBatchOperator(task_id="p", output_path="/x", requests=[], queue=QueuePolicy(max_queued_requests=10))
    assert paced.submission.queue == QueuePolicy(max_queued_requests=10)
