"""`ClaudeBatchSubmitOperator`: validate, split and submit requests as Message Batches, exactly once.

Returns the list of batch IDs (XCom `return_value`) and pushes the first as `batch_id`. With
`wait_for_completion=True` it also waits, deferred (the same trigger as `ClaudeBatchSensor`) or
in the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator

from airflow_provider_claude_batch.defaults import (
    API_MAX_BODY_BYTES,
    API_MAX_REQUESTS,
    DEFAULT_CONN_ID,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_claude_batch.operators.common import (
    LANDING_PARAMETERS,
    HoldsBatches,
    link_upstream,
    make_hook,
    publish_record,
    refusals_fail_the_task,
    reject_foreign_parameters,
    step_arguments,
    waiting_step,
)
from airflow_provider_claude_batch.operators.links import CONSOLE_LINKS
from airflow_provider_claude_batch.submit.canary import CANARY_RESUME_METHOD, CanaryWait
from airflow_provider_claude_batch.submit.policy import CreatePolicy
from airflow_provider_claude_batch.submit.submission import PARAMS_DOC, Submission

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.submit.record import SubmissionRecord
    from airflow_provider_claude_batch.submit.submission import QueuePolicy, RequestLike
    from airflow_provider_claude_batch.wait.waiting import WaitPolicy

WAIT_PARAMS_DOC = """
    :param claude_batch_conn_id: the Claude Batch connection (key, workspace, base URL).
    :param deferrable: wait in the triggerer (no worker slot held) instead of polling in the worker;
        default ``[operators] default_deferrable``.
    :param poll_interval: seconds between the first polls; it backs off while nothing changes.
    :param wait_policy: a `WaitPolicy` (max poll interval, error budget, timeout).
    :param cancel_on_kill: cancel unfinished batches when a user marks the task failed, or the wait's
        timeout passes (stops spending; what finished is still landable). Never on a clear or a retry.
"""


class ClaudeBatchSubmitOperator(HoldsBatches, BaseOperator):
    """Submit requests as Message Batches (split as needed) and return their IDs.

    Every request is validated before any API call. The submission is recorded (in Airflow's task
    state store, or under ``state_path``: see the README's "Running on several machines"), so a
    retry, a clear or a backfill re-run of the same task instance with the same input re-attaches
    to the batches already created; ``force_resubmit=True`` submits anew.

    :param wait_for_completion: also wait for the batches to end (deferred when ``deferrable``);
        without it the task ends once every batch exists, and a sensor waits.
    """

    template_fields: Sequence[str] = ("submission",)
    operator_extra_links = CONSOLE_LINKS
    ui_color = "#e8dccd"

    def __init__(
        self,
        *,
        requests: Iterable[RequestLike] | None = None,
        requests_path: str | ObjectStoragePath | None = None,
        rows: Iterable[RequestLike] | None = None,
        rows_path: str | ObjectStoragePath | None = None,
        rows_format: str | None = None,
        custom_id_column: str = "custom_id",
        params_template: Mapping[str, Any] | None = None,
        build_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        system: str | list[Any] | None = None,
        max_requests_per_batch: int = API_MAX_REQUESTS,
        max_batch_bytes: int = API_MAX_BODY_BYTES,
        storage_conn_id: str | None = None,
        state_path: str | ObjectStoragePath | None = None,
        force_resubmit: bool = False,
        queue: QueuePolicy | None = None,
        create_policy: CreatePolicy = CreatePolicy(),  # noqa: B008  (frozen: shared safely)
        output_type: Any = None,
        preflight: bool = True,
        max_cost_usd: float | None = None,
        canary_requests: int = 0,
        prompt_caching: Literal["auto", "off"] = "auto",
        cache_warmup: bool = False,
        claude_batch_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wait_policy: WaitPolicy | None = None,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        reject_foreign_parameters(type(self).__name__, kwargs, LANDING_PARAMETERS)
        super().__init__(**kwargs)
        self.submission = Submission(**step_arguments(Submission, locals()))
        self.claude_batch_conn_id = claude_batch_conn_id
        self.wait_for_completion = wait_for_completion
        self.waiting = waiting_step(claude_batch_conn_id, deferrable, poll_interval, cancel_on_kill, wait_policy)
        self._batch_ids: list[str] = []
        self._context: Context | None = None
        link_upstream(self, *self.submission.runtime_inputs())

    def execute(self, context: Context) -> list[str] | None:
        """Submit (re-attaching to what the record shows), then wait if asked to."""
        self._context = context
        hook = make_hook(self.claude_batch_conn_id)
        step = self.submission
        store = step.record_store(context)
        prepared, plans = step.prepare(context, hook)
        estimate = step.check_before_spend(hook, store, context, prepared)
        submitter, record = step.open(hook, store, context, prepared, plans, estimate=estimate)
        with refusals_fail_the_task(hook, lambda: self._batch_ids, "the submission"):
            record = step.submit_parts(
                self,
                submitter,
                record,
                prepared,
                plans,
                on_part=lambda done: self._published(context, done),
                resume_with="execute_after_queue_wait",
                error_budget=self.waiting.policy.error_budget,
                canary=CanaryWait(self.waiting, CANARY_RESUME_METHOD),
            )
        del prepared
        if not self.wait_for_completion:
            return record.batch_ids
        created = [p.created_at for p in record.parts]
        return self.waiting.wait(
            self, hook, record.batch_ids, created, resume_with="execute_complete", look_first=False
        )

    def _published(self, context: Context, record: SubmissionRecord) -> None:
        self._batch_ids = record.batch_ids
        publish_record(context, record)

    def execute_after_queue_wait(self, context: Context, event: object = None) -> list[str] | None:
        """Resumed when the queue has room: carry on where the submission record says we are."""
        from airflow_provider_claude_batch.submit.queue_room import raise_unless_room

        raise_unless_room(event)
        return self.execute(context)

    def execute_after_canary(self, context: Context, event: object = None) -> list[str] | None:
        """Resumed when the canary batch ended: a cancel or a failed wait fails the task; else carry on
        where the record says we are (the canary's results are read next).
        """
        self.waiting.finish(make_hook(self.claude_batch_conn_id), event)
        return self.execute(context)

    def execute_complete(self, context: Context, event: object = None) -> list[str]:
        """Resumed when the wait ended: success only when every batch ended without a cancel."""
        batch_ids = self.waiting.finish(make_hook(self.claude_batch_conn_id), event)
        context["ti"].xcom_push(key="batch_id", value=batch_ids[0])
        return batch_ids


ClaudeBatchSubmitOperator.__doc__ = (ClaudeBatchSubmitOperator.__doc__ or "") + PARAMS_DOC + WAIT_PARAMS_DOC
