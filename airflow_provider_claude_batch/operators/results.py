"""`ClaudeBatchResultsOperator`: land ended batches' results under an output path, the manifest last."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_claude_batch.defaults import DEFAULT_CONN_ID, DEFAULT_POLL_INTERVAL
from airflow_provider_claude_batch.operators.common import (
    SUBMISSION_RECORD_XCOM_KEY,
    LandsResults,
    link_upstream,
    make_hook,
    normalize_batch_ids,
    refusals_fail_the_task,
    reject_foreign_parameters,
    submit_parameters,
    waiting_step,
)
from airflow_provider_claude_batch.operators.links import BATCH_IDS_XCOM_KEY, CONSOLE_LINKS
from airflow_provider_claude_batch.operators.one_task import LANDING_PARAMS_DOC, ROUNDS_PARAM_DOC
from airflow_provider_claude_batch.operators.submit import WAIT_PARAMS_DOC
from airflow_provider_claude_batch.output.landing import Landing, LandingPolicy
from airflow_provider_claude_batch.sync.routing import DEADLINE_PARAMS_DOC, Routing, SyncPolicy

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime, timedelta

    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.operators.lineage import Landed
    from airflow_provider_claude_batch.operators.rounds import Rounds
    from airflow_provider_claude_batch.output.landing import Manifest
    from airflow_provider_claude_batch.submit.record import SubmissionRecord
    from airflow_provider_claude_batch.submit.submission import Submission
    from airflow_provider_claude_batch.wait.events import WaitOutcome
    from airflow_provider_claude_batch.wait.waiting import WaitPolicy

RESUBMIT_DOC = """
    :param batch_ids: the batches to land: a batch ID, a list (``submit.output``) or a comma-separated
        string (templated). Given ``submit.output``, each batch's results are checked exactly against
        the submit task's record (counts and custom_ids), else against the batch's own counts.
    :param storage_conn_id: the connection for the output's object storage.
    :param resubmit: with ``max_retry_rounds``, a `Submission` with the submit task's input and defaults
        (the same ``requests``/``rows``..., ``model``, ``max_tokens``, ``state_path``): retryable failures
        are resubmitted from it (paying again for those), and the output takes the one-task layout
        (``rounds/``). Its ``storage_conn_id`` and ``output_type`` default to this operator's.
    :param output_type: the submit task's ``output_type`` (a Pydantic model class or a JSON schema dict):
        each succeeded result is validated against it and lands with one column per top-level field; one
        that does not validate is a failure row (``error_type`` ``invalid_output``). The summary says how
        many validated; ``read_validated`` reads the table back as model instances.
"""


class ClaudeBatchResultsOperator(LandsResults, BaseOperator):
    """Land ended batches' results under ``output_path`` and return the manifest's summary (a small dict).

    Files (see the README for their columns): ``raw/<batch_id>.jsonl`` (the results exactly as the
    API served them), ``results.jsonl`` (one flat row per request), ``failures.jsonl`` (errored,
    canceled and expired rows), ``results.csv`` / ``results.parquet`` when asked for in ``formats``,
    and ``_manifest.json``, written last: the commit marker readers can rely on. Results never go
    through XCom. The waiting parameters apply to follow-up rounds only (``max_retry_rounds``).
    """

    template_fields: Sequence[str] = ("batch_ids", "output_path", "resubmit", "routing")
    operator_extra_links = CONSOLE_LINKS
    ui_color = "#e8dccd"

    def __init__(
        self,
        *,
        batch_ids: str | Sequence[str],
        output_path: str | ObjectStoragePath,
        formats: Sequence[str] = ("jsonl",),
        max_failed_fraction: float | None = None,
        landing_policy: LandingPolicy | None = None,
        storage_conn_id: str | None = None,
        max_retry_rounds: int = 0,
        resubmit: Submission | None = None,
        output_type: Any = None,
        retry_invalid_output: bool = False,
        claude_batch_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wait_policy: WaitPolicy | None = None,
        cancel_on_kill: bool = True,
        deadline: datetime | timedelta | str | None = None,
        sync_fallback: bool = True,
        sync_concurrency: int = 8,
        max_sync_cost_usd: float | None = None,
        sync_policy: SyncPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_claude_batch.operators.lineage import output_asset

        hint = "resubmit=Submission(...)"
        reject_foreign_parameters(
            type(self).__name__,
            kwargs,
            {n: f"{h}; or, for resubmission, {hint}" for n, h in submit_parameters().items()},
        )
        if max_retry_rounds < 0:
            raise ValueError("max_retry_rounds cannot be negative: 0 lands each request's first outcome")
        if bool(max_retry_rounds) != (resubmit is not None):
            raise ValueError(
                "max_retry_rounds and resubmit go together: resubmitting needs the submit task's input, "
                f"as {hint}; without rounds, leave resubmit out"
            )
        if deadline is not None and resubmit is None:
            raise ValueError(
                "deadline needs resubmit=Submission(...) and max_retry_rounds: what the batches leave is sent "
                "to the Messages API from the submit task's input"
            )
        if resubmit is not None and resubmit.storage_conn_id is None:
            resubmit = dataclasses.replace(resubmit, storage_conn_id=storage_conn_id)
        if resubmit is not None and resubmit.output_type is None:
            resubmit = dataclasses.replace(resubmit, output_type=output_type)
        if resubmit is not None and resubmit.output_type is not output_type:
            raise ValueError(
                "resubmit asks for another output_type than the one results are validated against: "
                "give the submit task's output_type to this operator (resubmit takes it from here)"
            )
        kwargs.setdefault("outlets", [output_asset(output_path, kwargs.get("task_id", "claude_batch"))])
        super().__init__(**kwargs)
        self.batch_ids = batch_ids
        self.output_path = output_path
        self.storage_conn_id = storage_conn_id
        self.claude_batch_conn_id = claude_batch_conn_id
        self.max_retry_rounds = max_retry_rounds
        self.resubmit = resubmit
        self.retry_invalid_output = retry_invalid_output
        self.routing = Routing(
            deadline, sync_fallback, sync_concurrency, max_sync_cost_usd, policy=sync_policy or SyncPolicy()
        )
        self.landing = Landing(tuple(formats), max_failed_fraction, landing_policy or LandingPolicy(), output_type)
        self.waiting = waiting_step(claude_batch_conn_id, deferrable, poll_interval, cancel_on_kill, wait_policy)
        self._submitted_by = _submitting_task_id(batch_ids)
        self._batch_ids: list[str] = []
        self._context: Context | None = None
        self._landed: Landed | None = None
        self._timed_out: WaitOutcome | None = None
        if resubmit is not None:
            link_upstream(self, *resubmit.runtime_inputs())

    def execute(self, context: Context) -> Manifest:
        """Land the batches (with rounds: resubmitting what is worth retrying) and return the summary."""
        from airflow_provider_claude_batch.operators.lineage import emit_asset_event
        from airflow_provider_claude_batch.output.landing import report_manifest
        from airflow_provider_claude_batch.storage import as_path

        self._context = context
        ids = normalize_batch_ids(self.batch_ids)
        context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=ids)
        output = as_path(self.output_path, self.storage_conn_id)
        hook = make_hook(self.claude_batch_conn_id)
        record = self.upstream_record(context)
        with refusals_fail_the_task(hook, lambda: self._batch_ids or ids, "to report on or serve the batches"):
            if self.resubmit is None:
                from airflow_provider_claude_batch.results.checks import expected_from_record

                estimate = record.estimate if record is not None else None
                expected = expected_from_record(record)
                warmup = record.warmup if record is not None else None
                manifest = self.landing.land(hook, ids, output, expected=expected, estimate=estimate, warmup=warmup)
                all_ids = ids
            else:
                manifest, all_ids = self._rounds(self.resubmit, hook, output, ids, record).run(context)
        self._landed = (str(output), all_ids)
        report_manifest(self.log, manifest)
        emit_asset_event(context, self.outlets, output)
        return self.landing.summary(manifest, output, all_ids)

    def resume(self, context: Context, event: object = None) -> Manifest:
        """A follow-up round's batches have ended (or the wait failed): carry on from the records."""
        outcome = self.waiting.parse_event(event)
        # The wait of a guarded deadline ends at the switch time: the rounds then cancel and land.
        if outcome.status == "timeout" and self.routing.guarded:
            self._timed_out = outcome
        else:
            self.waiting.raise_for_unended(make_hook(self.claude_batch_conn_id), outcome)
        return self.execute(context)

    def execute_after_queue_wait(self, context: Context, event: object = None) -> Manifest:
        """Resumed when the queue has room for a follow-up round: carry on where the records say we are."""
        from airflow_provider_claude_batch.submit.queue_room import raise_unless_room

        raise_unless_room(event)
        return self.execute(context)

    def upstream_record(self, context: Context) -> SubmissionRecord | None:
        """The record of the submit task whose output `batch_ids` is (same DAG run, not mapped), as that task
        published it to XCom: each batch's request count and custom_ids' sha256. Without one, each batch is
        checked for duplicates and against its own request counts.
        """
        if self._submitted_by is None or self.dag is None or not self.dag.has_task(self._submitted_by):
            return None
        from airflow_provider_claude_batch.submit.record import SubmissionRecord

        try:
            raw = context["ti"].xcom_pull(task_ids=self._submitted_by, key=SUBMISSION_RECORD_XCOM_KEY)
            return SubmissionRecord.from_dict(raw) if raw is not None else None
        except Exception as exc:
            self.log.warning(
                "Could not read the submission record of %s (%s); checking each batch's results for "
                "duplicates and against its request counts only",
                self._submitted_by,
                exc,
            )
            return None

    def _rounds(
        self,
        resubmit: Submission,
        hook: ClaudeBatchHook,
        output: ObjectStoragePath,
        ids: list[str],
        record: SubmissionRecord | None,
    ) -> Rounds:
        from airflow_provider_claude_batch.operators.rounds import Rounds

        return Rounds(
            task=self,
            hook=hook,
            submission=resubmit,
            waiting=self.waiting,
            landing=self.landing,
            output=output,
            max_retry_rounds=self.max_retry_rounds,
            on_batches=self._batches_now,
            given=ids,
            given_record=record,
            retry_invalid_output=self.retry_invalid_output,
            routing=self.routing,
            timed_out=self._timed_out,
        )


ClaudeBatchResultsOperator.__doc__ = (
    (ClaudeBatchResultsOperator.__doc__ or "")
    + RESUBMIT_DOC
    + LANDING_PARAMS_DOC
    + ROUNDS_PARAM_DOC
    + DEADLINE_PARAMS_DOC
    + WAIT_PARAMS_DOC
)


def _submitting_task_id(batch_ids: object) -> str | None:
    """The task whose XCom `batch_ids` is (e.g. ``submit.output``), to find its submission record."""
    from airflow_provider_claude_batch._compat import plain_xcom_source

    source = plain_xcom_source(batch_ids)
    if source is not None and source[1] in ("return_value", BATCH_IDS_XCOM_KEY):
        return source[0]
    return None
