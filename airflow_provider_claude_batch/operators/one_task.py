"""`ClaudeBatchOperator`: submit, wait (deferred), land, and resubmit what is worth retrying, in one task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_claude_batch.defaults import DEFAULT_CONN_ID, DEFAULT_POLL_INTERVAL
from airflow_provider_claude_batch.operators.common import (
    LandsResults,
    link_upstream,
    make_hook,
    refusals_fail_the_task,
    step_arguments,
    takes_step_fields,
    waiting_step,
)
from airflow_provider_claude_batch.operators.links import CONSOLE_LINKS
from airflow_provider_claude_batch.operators.submit import WAIT_PARAMS_DOC
from airflow_provider_claude_batch.output.landing import Landing, LandingPolicy
from airflow_provider_claude_batch.submit.submission import PARAMS_DOC, Submission
from airflow_provider_claude_batch.sync.routing import ROUTING_PARAMS_DOC, Routing, SyncPolicy

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime, timedelta

    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.operators.lineage import Landed
    from airflow_provider_claude_batch.operators.rounds import Rounds
    from airflow_provider_claude_batch.output.landing import Manifest
    from airflow_provider_claude_batch.sync.routing import Route
    from airflow_provider_claude_batch.wait.events import WaitOutcome
    from airflow_provider_claude_batch.wait.waiting import WaitPolicy

LANDING_PARAMS_DOC = """
    :param output_path: where results land (templated; any object storage). Results never go through XCom.
    :param formats: files beside ``results.jsonl``: ``"csv"``, ``"parquet"`` (parquet needs pyarrow, and only
        the results operator without retry rounds writes it).
    :param max_failed_fraction: fail the task (after landing) when more than this fraction of requests
        errored, expired, were canceled or (with ``output_type``) gave an output that did not validate;
        default: succeed and report them.
    :param landing_policy: a `LandingPolicy` (expiry warning, price overrides).
"""
ROUNDS_PARAM_DOC = """
    :param max_retry_rounds: resubmit requests that failed for the service's reasons (server error,
        overloaded, rate limited, timed out) or expired, up to this many times; each round pays again
        for those requests only. Invalid requests are never resubmitted.
    :param retry_invalid_output: with ``output_type`` and rounds, also resubmit once each request whose
        output did not validate (``invalid_output``): pays again for those; a second invalid output stays failed.
"""


class ClaudeBatchOperator(LandsResults, BaseOperator):
    """Submit, wait (deferred), land, and resubmit what is worth retrying, all in one task.

    It composes the steps of the three-task flow (`Submission`, `Waiting`, `Landing`) and takes the
    submit parameters as keywords (below). Each round is landed under ``rounds/round-<n>/`` (raw JSONL
    kept); the top-level ``results.jsonl`` has exactly one row per input custom_id with its final
    outcome, ``round`` and ``attempts``, and the manifest lists the rounds, their batches and counts,
    and the cost across rounds. Every round keeps the submit operator's guarantees: a retry or clear
    during round 2 re-attaches to round 2's batches; landed rounds are not downloaded again.

    With a ``deadline``, batches still running at the switch time are canceled and what they did not
    finish is sent to the Messages API (a last round, ``route`` ``sync`` in every row it lands); with
    ``route="sync"`` (or ``"auto"`` on a small input) every request goes there, in the same files.
    """

    template_fields: Sequence[str] = ("submission", "output_path", "routing")
    operator_extra_links = CONSOLE_LINKS
    ui_color = "#e8dccd"

    @takes_step_fields(Submission)
    def __init__(
        self,
        *,
        output_path: str | ObjectStoragePath,
        formats: Sequence[str] = ("jsonl",),
        max_failed_fraction: float | None = None,
        landing_policy: LandingPolicy | None = None,
        claude_batch_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wait_policy: WaitPolicy | None = None,
        cancel_on_kill: bool = True,
        max_retry_rounds: int = 2,
        retry_invalid_output: bool = False,
        deadline: datetime | timedelta | str | None = None,
        sync_fallback: bool = True,
        sync_concurrency: int = 8,
        max_sync_cost_usd: float | None = None,
        route: Route = "batch",
        sync_below: int = 100,
        sync_policy: SyncPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_claude_batch.operators.common import reject_foreign_parameters
        from airflow_provider_claude_batch.operators.lineage import output_asset

        reject_foreign_parameters(type(self).__name__, kwargs, {"batch_ids": "the results operator's parameter"})
        if max_retry_rounds < 0:
            raise ValueError("max_retry_rounds cannot be negative: 0 lands each request's first outcome")
        submit_kwargs = step_arguments(Submission, kwargs)
        for name in submit_kwargs:
            del kwargs[name]
        kwargs.setdefault("outlets", [output_asset(output_path, kwargs.get("task_id", "claude_batch"))])
        super().__init__(**kwargs)
        self.submission = Submission(**submit_kwargs)
        self.output_path = output_path
        self.claude_batch_conn_id = claude_batch_conn_id
        self.max_retry_rounds = max_retry_rounds
        self.retry_invalid_output = retry_invalid_output
        self.routing = Routing(
            deadline,
            sync_fallback,
            sync_concurrency,
            max_sync_cost_usd,
            route,
            sync_below,
            sync_policy or SyncPolicy(),
        )
        if self.routing.guarded and self.submission.canary_requests and route != "sync":
            raise ValueError(
                "canary_requests cannot be used with a deadline and sync_fallback: the rest waits for the canary "
                "batch for as long as it runs (up to 24 h), which the deadline guard cannot cut short; drop the "
                "canary (preflight still checks the requests for free) or use route='sync'"
            )
        self.landing = Landing(
            tuple(formats), max_failed_fraction, landing_policy or LandingPolicy(), self.submission.output_type
        )
        self.waiting = waiting_step(claude_batch_conn_id, deferrable, poll_interval, cancel_on_kill, wait_policy)
        self._batch_ids: list[str] = []
        self._context: Context | None = None
        self._landed: Landed | None = None
        link_upstream(self, *self.submission.runtime_inputs())

    def submission_for(self, context: Context) -> Submission:
        """The submit step this run uses (the decorator gives it the function's stored output)."""
        return self.submission

    def execute(self, context: Context) -> Manifest:
        """Walk the rounds: recorded and landed ones are re-used, the first open one goes on."""
        return self._advance(context)

    def resume(self, context: Context, event: object = None) -> Manifest:
        """A round's batches have ended (or the wait failed): carry on from the records.

        A batch canceled outside Airflow is landed with its canceled rows, not retried.
        """
        hook = make_hook(self.claude_batch_conn_id)
        outcome = self.waiting.parse_event(event)
        # The wait of a guarded deadline ends at the switch time: the rounds then cancel and land (and
        # raise this timeout after all if the switch time has not come: the wait ended for its own reasons).
        if outcome.status == "timeout" and self.routing.guarded:
            return self._advance(context, timed_out=outcome)
        self.waiting.raise_for_unended(hook, outcome)
        return self._advance(context)

    def execute_after_canary(self, context: Context, event: object = None) -> Manifest:
        """Resumed when the canary batch ended: a cancel or a failed wait fails the task; else carry on
        from the records (the canary's results are read next).
        """
        self.waiting.finish(make_hook(self.claude_batch_conn_id), event)
        return self._advance(context)

    def execute_after_queue_wait(self, context: Context, event: object = None) -> Manifest:
        """Resumed when the queue has room: carry on where the records say we are."""
        from airflow_provider_claude_batch.submit.queue_room import raise_unless_room

        raise_unless_room(event)
        return self.execute(context)

    def _rounds(self, context: Context, timed_out: WaitOutcome | None = None) -> Rounds:
        from airflow_provider_claude_batch.operators.rounds import Rounds
        from airflow_provider_claude_batch.storage import as_path

        submission = self.submission_for(context)
        return Rounds(
            task=self,
            hook=make_hook(self.claude_batch_conn_id),
            submission=submission,
            waiting=self.waiting,
            landing=self.landing,
            output=as_path(self.output_path, submission.storage_conn_id),
            max_retry_rounds=self.max_retry_rounds,
            on_batches=self._batches_now,
            retry_invalid_output=self.retry_invalid_output,
            routing=self.routing,
            timed_out=timed_out,
        )

    def _advance(self, context: Context, timed_out: WaitOutcome | None = None) -> Manifest:
        from airflow_provider_claude_batch.operators.lineage import emit_asset_event
        from airflow_provider_claude_batch.output.landing import report_manifest

        self._context = context
        rounds = self._rounds(context, timed_out)
        with refusals_fail_the_task(rounds.hook, lambda: self._batch_ids, "to report on or serve the batches"):
            manifest, all_ids = rounds.run(context)
        self._landed = (str(rounds.output), all_ids)
        report_manifest(self.log, manifest)
        emit_asset_event(context, self.outlets, rounds.output)
        return self.landing.summary(manifest, rounds.output, all_ids)


ClaudeBatchOperator.__doc__ = (
    (ClaudeBatchOperator.__doc__ or "")
    + LANDING_PARAMS_DOC
    + ROUNDS_PARAM_DOC
    + ROUTING_PARAMS_DOC
    + PARAMS_DOC
    + WAIT_PARAMS_DOC
)
