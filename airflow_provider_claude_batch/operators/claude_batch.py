"""`ClaudeBatchSubmitOperator`: validate, split and submit requests as Message Batches, exactly once.

Returns the list of batch IDs (XCom `return_value`) and pushes the first as `batch_id`. With
`wait_for_completion=True` it also waits, deferred (the same trigger as `ClaudeBatchSensor`) or
in the worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_claude_batch._compat import conf
from airflow_provider_claude_batch.defaults import (
    API_MAX_BODY_BYTES,
    API_MAX_REQUESTS,
    BATCH_LIFETIME,
    DEADLINE_MARGIN,
    DEFAULT_CONN_ID,
    DEFAULT_ERROR_BUDGET,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
)
from airflow_provider_claude_batch.operators.links import BATCH_IDS_XCOM_KEY, CONSOLE_LINKS

SUBMISSION_RECORD_XCOM_KEY = "submission_record"

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.requests.plan import BatchPlan
    from airflow_provider_claude_batch.requests.prepare import PreparedRequests
    from airflow_provider_claude_batch.submit.create import CreatePolicy, Submitter
    from airflow_provider_claude_batch.submit.record import SubmissionRecord, TaskKey
    from airflow_provider_claude_batch.submit.store import RecordStore
    from airflow_provider_claude_batch.wait.events import WaitOutcome
    from airflow_provider_claude_batch.wait.tracker import WaitTracker


def default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def task_key(context: Context) -> TaskKey:
    from airflow_provider_claude_batch.submit.record import TaskKey

    ti = context["ti"]
    map_index = ti.map_index if ti.map_index is not None else -1
    return TaskKey(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=map_index)


def resolve_runtime_value(value: Any, context: Context) -> Any:
    """Resolve an XComArg (or any resolvable reference) without Jinja-rendering what it holds."""
    from airflow_provider_claude_batch._compat import resolve

    return resolve(value, context)


def link_upstream(operator: BaseOperator, *values: Any) -> None:
    """Make XComArgs given to non-templated arguments set their upstream dependency, as templated ones do."""
    from airflow_provider_claude_batch._compat import link_upstream as link

    for value in values:
        if value is not None:
            link(operator, value)


def normalize_batch_ids(value: Any) -> list[str]:
    """A str, a list of str (e.g. the submit task's output), or a comma-separated str."""
    if isinstance(value, str):
        ids = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence):
        ids = [str(part).strip() for part in value]
    else:
        raise ValueError(f"batch_ids must be a batch ID or a list of them, not {type(value).__name__}")
    ids = [i for i in ids if i]
    if not ids:
        raise ValueError("batch_ids is empty: nothing to wait for")
    from airflow_provider_claude_batch.output.land import check_batch_ids

    check_batch_ids(ids)
    return list(dict.fromkeys(ids))


@contextmanager
def refusals_fail_the_task(hook: ClaudeBatchHook, batch_ids: Callable[[], Sequence[str]], doing: str) -> Iterator[None]:
    """An API refusal (401/403/404/407) while `doing` becomes the documented `BatchApiRefusedError`,
    not retried: a retry would be refused the same way. `batch_ids()` names the batches made so far.
    """
    import anthropic

    from airflow_provider_claude_batch.exceptions import BatchApiRefusedError
    from airflow_provider_claude_batch.wait.polling import REFUSED_STATUSES

    try:
        yield
    except anthropic.APIStatusError as exc:
        if exc.status_code not in REFUSED_STATUSES:
            raise
        raise BatchApiRefusedError(
            f"The API refused {doing} ({hook.describe_error(exc)}): check the connection's key and "
            "workspace_id, and the batch IDs; retrying would be refused the same way.",
            list(batch_ids()),
        ) from exc


class ClaudeBatchWaitMixin:
    """Waiting shared by the submit operator and the sensor: deadline, trigger, in-task loop, outcome."""

    claude_batch_conn_id: str
    poll_interval: float
    max_poll_interval: float
    polling_error_budget: float
    cancel_on_kill: bool
    wait_timeout: timedelta | None

    def _deadline(self, created_at: Iterable[float | None]) -> float:
        known = [c for c in created_at if c is not None]
        deadline = (max(known) if known else time.time()) + BATCH_LIFETIME + DEADLINE_MARGIN
        if self.wait_timeout is not None:
            deadline = min(deadline, time.time() + self.wait_timeout.total_seconds())
        return deadline

    def _trigger(self, batch_ids: Sequence[str], deadline: float) -> Any:
        from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchTrigger

        return ClaudeBatchTrigger(
            batch_ids,
            self.claude_batch_conn_id,
            deadline=deadline,
            poll_interval=self.poll_interval,
            max_poll_interval=self.max_poll_interval,
            error_budget=self.polling_error_budget,
            cancel_on_kill=self.cancel_on_kill,
        )

    def _tracker(self, batch_ids: Sequence[str], deadline: float) -> WaitTracker:
        return self._trigger(batch_ids, deadline).tracker()  # type: ignore[no-any-return]

    @staticmethod
    def _parse_wait_event(event: Any) -> WaitOutcome:
        """The trigger's event, validated: a missing or odd one is an error, never a success."""
        from airflow_provider_claude_batch.exceptions import BatchApiError
        from airflow_provider_claude_batch.wait.events import WaitOutcome

        try:
            return WaitOutcome.from_payload(event)
        except ValueError as exc:
            raise BatchApiError(f"Waiting ended without a usable answer ({exc}); a retry re-attaches.") from exc

    def _raise_for_unended(self, outcome: WaitOutcome) -> None:
        """A wait that did not see every batch end: cancel on the deadline if asked to, then raise."""
        from airflow_provider_claude_batch.wait.loop import raise_unless_ended_cleanly

        if outcome.status == "ended":
            return
        if outcome.status == "timeout" and self.cancel_on_kill:
            self._cancel_unfinished(outcome.batch_ids, reason="the wait deadline passed")
        raise_unless_ended_cleanly(outcome)

    def _finish_wait(self, event: Any) -> list[str]:
        """Success only when every batch ended without a cancel."""
        from airflow_provider_claude_batch.wait.loop import raise_unless_ended_cleanly

        outcome = self._parse_wait_event(event)
        self._raise_for_unended(outcome)
        raise_unless_ended_cleanly(outcome)
        return outcome.batch_ids

    def _hook(self) -> ClaudeBatchHook:
        from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

        return ClaudeBatchHook(claude_batch_conn_id=self.claude_batch_conn_id)

    def _cancel_unfinished(self, batch_ids: Sequence[str], *, reason: str) -> None:
        hook = self._hook()
        for batch_id in batch_ids:
            try:
                batch = hook.retrieve_batch(batch_id)
                if batch.processing_status == "in_progress":
                    hook.cancel_batch(batch_id)
                    hook.log.warning("Canceled batch %s because %s (cancel_on_kill=True)", batch_id, reason)
            except Exception as exc:
                hook.log.warning("Could not cancel batch %s: %s", batch_id, hook.describe_error(exc))

    def _cancel_if_user_failed_the_task(self, batch_ids: Sequence[str], context: Context | None) -> None:
        """on_kill runs on any SIGTERM (a clear, mark success, a worker shutdown): only "marked failed"
        is a request to stop spending.
        """
        if not self.cancel_on_kill or not batch_ids or context is None:
            return
        from airflow_provider_claude_batch._compat import current_task_state

        try:
            state = current_task_state(context["ti"])
        except Exception:
            return
        if state == "failed":
            self._cancel_unfinished(batch_ids, reason="the task was marked failed")


class ClaudeBatchSubmitOperator(ClaudeBatchWaitMixin, BaseOperator):
    """Submit requests as Message Batches (split as needed) and return their IDs.

    Input, exactly one of:
    - ``requests``: a list of ``{"custom_id", "params"}`` (or an XComArg giving one);
    - ``requests_path``: a JSONL file of such requests on any object storage;
    - ``rows`` / ``rows_path`` (JSONL or CSV) with ``params_template`` (strings with ``{column}``
      placeholders) or ``build_params(row) -> params``; ``custom_id_column`` names the ID column.

    ``model``, ``max_tokens`` and ``system`` fill params that a request leaves out. Every request
    is validated before any API call. The submission is recorded (in Airflow's task state store,
    or under ``state_path`` when set: see the README's "Running on several machines"), so a retry,
    a clear or a backfill re-run of the same task instance with the same input re-attaches to the
    batches already created; ``force_resubmit=True`` submits anew.
    """

    template_fields: Sequence[str] = ("requests_path", "rows_path", "state_path", "model", "system")
    operator_extra_links = CONSOLE_LINKS
    ui_color = "#e8dccd"

    def __init__(
        self,
        *,
        requests: Iterable[Mapping[str, Any]] | Any | None = None,
        requests_path: str | ObjectStoragePath | None = None,
        rows: Iterable[Mapping[str, Any]] | Any | None = None,
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
        claude_batch_conn_id: str = DEFAULT_CONN_ID,
        storage_conn_id: str | None = None,
        state_path: str | ObjectStoragePath | None = None,
        force_resubmit: bool = False,
        max_queued_requests: int | None = None,
        queue_check_interval: float = 60.0,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        polling_error_budget: float = DEFAULT_ERROR_BUDGET,
        wait_timeout: timedelta | None = None,
        cancel_on_kill: bool = True,
        create_policy: CreatePolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.requests = requests
        self.requests_path = requests_path
        self.rows = rows
        self.rows_path = rows_path
        self.rows_format = rows_format
        self.custom_id_column = custom_id_column
        self.params_template = params_template
        self.build_params = build_params
        self.model = model
        self.max_tokens = max_tokens
        self.system = system
        self.max_requests_per_batch = max_requests_per_batch
        self.max_batch_bytes = max_batch_bytes
        self.claude_batch_conn_id = claude_batch_conn_id
        self.storage_conn_id = storage_conn_id
        self.state_path = state_path
        self.force_resubmit = force_resubmit
        self.max_queued_requests = max_queued_requests
        self.queue_check_interval = queue_check_interval
        self.wait_for_completion = wait_for_completion
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.polling_error_budget = polling_error_budget
        self.wait_timeout = wait_timeout
        self.cancel_on_kill = cancel_on_kill
        self.create_policy = create_policy
        self._batch_ids: list[str] = []
        self._context: Context | None = None
        link_upstream(self, requests, rows)

    # ---- input ------------------------------------------------------------------------------------
    def prepare(self, context: Context) -> tuple[PreparedRequests, list[BatchPlan]]:
        """Read, validate, serialize and split the input; raises before any API call if it is bad."""
        from airflow_provider_claude_batch.exceptions import BatchInputError, InvalidRequestsError
        from airflow_provider_claude_batch.input.read import request_entries
        from airflow_provider_claude_batch.requests.hashing import prepare_requests
        from airflow_provider_claude_batch.requests.plan import plan_batches
        from airflow_provider_claude_batch.requests.prepare import RequestDefaults

        entries = request_entries(
            requests=resolve_runtime_value(self.requests, context),
            requests_path=self.requests_path,
            rows=resolve_runtime_value(self.rows, context),
            rows_path=self.rows_path,
            rows_format=self.rows_format,
            custom_id_column=self.custom_id_column,
            params_template=self.params_template,
            build_params=self.build_params,
            storage_conn_id=self.storage_conn_id,
        )
        defaults = RequestDefaults(model=self.model, max_tokens=self.max_tokens, system=self.system)
        prepared, problems, bad = prepare_requests(entries, defaults, max_body_bytes=self.max_batch_bytes)
        if bad:
            raise InvalidRequestsError([str(p) for p in problems], bad, prepared.requests_read)
        if not len(prepared):
            raise BatchInputError("The input has no requests; nothing was submitted.")
        plans = plan_batches(prepared, max_requests=self.max_requests_per_batch, max_body_bytes=self.max_batch_bytes)
        if self.max_queued_requests is not None:
            largest = max(p.request_count for p in plans)
            if largest > self.max_queued_requests:
                raise BatchInputError(
                    f"A batch of {largest} requests can never fit max_queued_requests={self.max_queued_requests}; "
                    "lower max_requests_per_batch."
                )
        self.log.info(
            "%d requests validated (%.1f MB); %d batch(es) planned; input fingerprint %s",
            len(prepared),
            len(prepared.buffer) / 1e6,
            len(plans),
            prepared.fingerprint[:16],
        )
        return prepared, plans

    def record_store(self, context: Context) -> RecordStore:
        """Where this task instance's submission record lives (see `record_store`); raises before any API call
        when that would be a disk other workers cannot read.
        """
        from airflow_provider_claude_batch.submit.create import CreatePolicy
        from airflow_provider_claude_batch.submit.store import open_record_store

        policy = self.create_policy or CreatePolicy()
        return open_record_store(
            state_path=self.state_path,
            storage_conn_id=self.storage_conn_id,
            context=context,
            settle_seconds=policy.claim_settle_seconds,
        )

    # ---- execution --------------------------------------------------------------------------------
    def execute(self, context: Context) -> list[str] | None:
        from airflow_provider_claude_batch.submit.create import CreatePolicy, Submitter

        self._context = context
        store = self.record_store(context)
        prepared, plans = self.prepare(context)
        hook = self._hook()
        submitter = Submitter(hook, store, self.create_policy or CreatePolicy())
        record = submitter.open_record(
            task_key(context), prepared, plans, force_resubmit=self.force_resubmit, attempt_id=str(context["ti"].id)
        )
        with refusals_fail_the_task(hook, lambda: self._batch_ids, "the submission"):
            record = self._submit_parts(
                hook, submitter, record, prepared, plans, on_part=lambda done: self._publish(context, done)
            )
        del prepared
        if not self.wait_for_completion:
            return record.batch_ids
        return self._wait(context, record)

    def execute_after_queue_wait(self, context: Context, event: Any = None) -> list[str] | None:
        """Resumed when the queue has room: carry on where the submission record says we are."""
        if not isinstance(event, Mapping) or event.get("status") != "fits":
            from airflow_provider_claude_batch.exceptions import BatchApiError, BatchApiRefusedError

            message = event.get("message") if isinstance(event, Mapping) else f"no usable event ({event!r})"
            refused = isinstance(event, Mapping) and event.get("error_kind") == "refused"
            error = BatchApiRefusedError if refused else BatchApiError
            raise error(
                f"Waiting for room in the batch queue failed: {message}"
                + ("" if refused else "; a retry looks again (nothing was created meanwhile).")
            )
        return self.execute(context)

    def execute_complete(self, context: Context, event: Any = None) -> list[str]:
        batch_ids = self._finish_wait(event)
        context["ti"].xcom_push(key="batch_id", value=batch_ids[0])
        return batch_ids

    def _submit_parts(
        self,
        hook: ClaudeBatchHook,
        submitter: Submitter,
        record: SubmissionRecord,
        prepared: PreparedRequests,
        plans: list[BatchPlan],
        on_part: Callable[[SubmissionRecord], None] | None = None,
    ) -> SubmissionRecord:
        """Give every planned batch its batch, part by part, waiting for queue room first if guarded."""
        for part in record.parts:
            if part.batch_id is None and self.max_queued_requests is not None:
                self._wait_for_queue_room(hook, part.request_count)
            record = submitter.submit_part(record, record.parts[part.index], prepared, plans[part.index])
            self._batch_ids = record.batch_ids
            if on_part is not None:
                on_part(record)
        return record

    def _publish(self, context: Context, record: SubmissionRecord) -> None:
        """Batch IDs to XCom as soon as each exists (the Console links and downstream read them)."""
        if record.batch_ids:
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=record.batch_ids)
            context["ti"].xcom_push(key="batch_id", value=record.batch_ids[0])
            # What a downstream results task checks each batch's results against (counts and custom_ids'
            # sha256, about 200 bytes a batch): the record itself may sit in this task's own state store.
            context["ti"].xcom_push(key=SUBMISSION_RECORD_XCOM_KEY, value=record.to_dict())

    def _wait_for_queue_room(self, hook: ClaudeBatchHook, needed: int) -> None:
        from airflow_provider_claude_batch.submit.queue import fits
        from airflow_provider_claude_batch.submit.queue_room import queued_requests

        queued = queued_requests(hook)
        assert self.max_queued_requests is not None
        if fits(queued, needed, self.max_queued_requests):
            return
        self.log.info(
            "%d requests already queued; %d more would exceed max_queued_requests=%d: waiting deferred",
            queued,
            needed,
            self.max_queued_requests,
        )
        from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchQueueTrigger

        self.defer(
            trigger=ClaudeBatchQueueTrigger(
                needed,
                self.max_queued_requests,
                self.claude_batch_conn_id,
                poll_interval=self.queue_check_interval,
                error_budget=self.polling_error_budget,
            ),
            method_name="execute_after_queue_wait",
        )

    def _wait(self, context: Context, record: SubmissionRecord) -> list[str]:
        deadline = self._deadline(p.created_at for p in record.parts)
        if self.deferrable:
            self.defer(trigger=self._trigger(record.batch_ids, deadline), method_name="execute_complete")
        from airflow_provider_claude_batch.wait.loop import wait_in_task

        outcome = wait_in_task(self._hook(), self._tracker(record.batch_ids, deadline))
        return self._finish_wait(outcome.to_payload())

    def on_kill(self) -> None:
        self._cancel_if_user_failed_the_task(self._batch_ids, self._context)


class ClaudeBatchOperator(ClaudeBatchSubmitOperator):
    """Submit, wait (deferred), land, and resubmit what is worth retrying, all in one task.

    Takes the submit operator's parameters (input, defaults, limits, state, waiting, cancelling)
    and the results operator's (``output_path``, ``formats``, ``max_failed_fraction``,
    ``price_overrides``). Requests that errored for the service's reasons (server error,
    overloaded, rate limited, timed out) or expired go to a follow-up batch with their original
    custom_ids and params, up to ``max_retry_rounds`` times; invalid ones never do. Each round is
    landed under ``rounds/round-<n>/`` (raw JSONL kept); the top-level ``results.jsonl`` has exactly
    one row per input custom_id with its final outcome, ``round`` and ``attempts``, and the manifest
    lists the rounds, their batches and counts, and the cost across rounds.

    Every round keeps the submit operator's guarantees: a retry or clear during round 2 re-attaches
    to round 2's batches; landed rounds are not downloaded again.
    """

    template_fields: Sequence[str] = (*ClaudeBatchSubmitOperator.template_fields, "output_path")

    def __init__(
        self,
        *,
        output_path: str | ObjectStoragePath,
        formats: Sequence[str] = ("jsonl",),
        max_failed_fraction: float | None = None,
        price_overrides: Mapping[str, Mapping[str, float]] | None = None,
        max_retry_rounds: int = 2,
        expiry_warning: timedelta = timedelta(days=3),
        **kwargs: Any,
    ) -> None:
        if "outlets" not in kwargs:
            kwargs["outlets"] = [_output_asset(output_path, kwargs.get("task_id", "claude_batch"))]
        super().__init__(**kwargs)
        if max_retry_rounds < 0:
            raise ValueError("max_retry_rounds cannot be negative")
        self.output_path = output_path
        self.formats = tuple(formats)
        self.max_failed_fraction = max_failed_fraction
        self.price_overrides = price_overrides
        self.max_retry_rounds = max_retry_rounds
        self.expiry_warning = expiry_warning
        self._landed: tuple[str, list[str]] | None = None

    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]
        with refusals_fail_the_task(self._hook(), lambda: self._batch_ids, "to report on or serve the batches"):
            return self._advance(context)

    def resume(self, context: Context, event: Any = None) -> dict[str, Any]:
        """A round's batches have ended (or the wait failed): carry on from the records.

        A batch canceled outside Airflow is landed with its canceled rows, not retried.
        """
        self._raise_for_unended(self._parse_wait_event(event))
        with refusals_fail_the_task(self._hook(), lambda: self._batch_ids, "to report on or serve the batches"):
            return self._advance(context)

    def _first_round(self) -> list[str] | None:
        """Batches submitted elsewhere that stand for round 0 (the results operator's); None: submit."""
        return None

    def _upstream_record(self, context: Context) -> SubmissionRecord | None:
        """The submission record of the batches given as `batch_ids` (the results operator's), if known."""
        return None

    def _advance(self, context: Context) -> dict[str, Any]:
        """Walk the rounds from the first: recorded and landed ones are re-used, the first open one goes on."""
        from airflow_provider_claude_batch.exceptions import BatchInputError
        from airflow_provider_claude_batch.output.land import LandingSettings, expected_from_record, land_results
        from airflow_provider_claude_batch.output.rounds import finalize_rounds, read_rows, round_folder
        from airflow_provider_claude_batch.requests.plan import plan_batches
        from airflow_provider_claude_batch.results.pricing import prices_from_overrides
        from airflow_provider_claude_batch.results.rounds import retry_ids
        from airflow_provider_claude_batch.storage import as_path
        from airflow_provider_claude_batch.submit.create import CreatePolicy, Submitter

        self._context = context
        # Landed only after every round is paid for: a format the rounds' files would not be written in is
        # refused first (the results operator without rounds lands parquet through land_results).
        unwritten = sorted(set(self.formats) - {"jsonl", "csv"})
        if unwritten:
            known = "Unknown output format(s)" if set(unwritten) - {"parquet"} else "Output format(s)"
            raise BatchInputError(
                f"{known} {unwritten}: the one-task flow writes jsonl and csv (parquet only "
                "from ClaudeBatchResultsOperator without retry rounds). Nothing was submitted."
            )
        ledger = self.record_store(context)
        prepared, plans = self.prepare(context)
        hook = self._hook()
        output = as_path(self.output_path, self.storage_conn_id)
        settings = LandingSettings(
            formats=("jsonl",),
            expiry_warning_seconds=self.expiry_warning.total_seconds(),
            prices=prices_from_overrides(self.price_overrides) if self.price_overrides else None,
        )
        manifests: list[dict[str, Any]] = []
        all_ids: list[str] = []
        chosen = prepared
        first_round = self._first_round()
        created: list[float | None]
        for number in range(self.max_retry_rounds + 1):
            if number:
                plans = plan_batches(
                    chosen, max_requests=self.max_requests_per_batch, max_body_bytes=self.max_batch_bytes
                )
            if number == 0 and first_round is not None:
                batch_ids, created = first_round, [None]
                # The input given here is the submit task's; where it was split the same way, check exactly.
                expected = expected_from_record(self._upstream_record(context), chosen.custom_ids, plans)
            else:
                submitter = Submitter(hook, ledger.for_round(number), self.create_policy or CreatePolicy())
                record = submitter.open_record(
                    task_key(context),
                    chosen,
                    plans,
                    force_resubmit=self.force_resubmit and number == 0,
                    attempt_id=str(context["ti"].id),
                )
                record = self._submit_parts(hook, submitter, record, chosen, plans)
                batch_ids, created = record.batch_ids, [p.created_at for p in record.parts]
                expected = expected_from_record(record, chosen.custom_ids, plans)
            all_ids += [b for b in batch_ids if b not in all_ids]
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=all_ids)
            self._batch_ids = batch_ids
            folder = round_folder(output, number)
            manifest = _landed_manifest(folder, batch_ids)
            if manifest is None:
                self._wait_round(hook, batch_ids, created)
                manifest = land_results(hook, batch_ids, folder, settings, expected=expected, within=output)
            manifests.append(manifest)
            again = retry_ids(read_rows(folder / "failures.jsonl"))
            if not again:
                break
            if number == self.max_retry_rounds:
                self.log.warning(
                    "%d requests still failed for retryable reasons after %d retry round(s); "
                    "they are reported as failed",
                    len(again),
                    self.max_retry_rounds,
                )
                break
            self.log.info(
                "Round %d: %d requests failed for reasons worth retrying (server errors, overload, "
                "expiry); submitting them again as round %d",
                number,
                len(again),
                number + 1,
            )
            try:
                chosen = prepared.subset(again)
            except KeyError as exc:
                raise BatchInputError(
                    f"The input given for resubmission lacks requests that failed: {exc}; "
                    "give the same input as the submit task."
                ) from None
        del prepared, chosen
        final = finalize_rounds(output, manifests, self.formats, time.time())
        self._landed = (str(output), all_ids)
        return finish_landing(self, context, final, output, all_ids)

    def _wait_round(self, hook: ClaudeBatchHook, batch_ids: list[str], created_at: list[float | None]) -> None:
        """Return once every batch of the round has ended; defer (or poll in the worker) until then."""
        if all(hook.retrieve_batch(b).processing_status == "ended" for b in batch_ids):
            return
        deadline = self._deadline(created_at)
        if self.deferrable:
            self.defer(trigger=self._trigger(batch_ids, deadline), method_name="resume")
        from airflow_provider_claude_batch.wait.loop import wait_in_task

        self._raise_for_unended(wait_in_task(hook, self._tracker(batch_ids, deadline)))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage (when its provider is installed): the batches in, the output location out."""
        return openlineage_facets(self._landed)


class ClaudeBatchResultsOperator(ClaudeBatchOperator):
    """Land ended batches' results under ``output_path`` and return the manifest's summary (a small dict).

    Files (see the README for their columns): ``raw/<batch_id>.jsonl`` (the results exactly as the
    API served them), ``results.jsonl`` (one flat row per request), ``failures.jsonl`` (errored,
    canceled and expired rows), ``results.csv`` / ``results.parquet`` when asked for in ``formats``,
    and ``_manifest.json``, written last: the commit marker readers can rely on. Results never go
    through XCom.

    By default the task succeeds and reports failed requests; ``max_failed_fraction`` fails it
    (after landing) when more than that fraction of requests errored, expired or were canceled.

    With ``max_retry_rounds`` > 0 and the submit task's input (the same ``requests``/``requests_path``/
    ``rows``... and defaults), retryable failures are resubmitted as ``ClaudeBatchOperator`` does,
    deferring while a follow-up batch runs; the layout is then the one-task flow's (``rounds/``).
    """

    template_fields: Sequence[str] = (*ClaudeBatchOperator.template_fields, "batch_ids")

    def __init__(
        self,
        *,
        batch_ids: str | Sequence[str] | Any,
        output_path: str | ObjectStoragePath,
        max_retry_rounds: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(output_path=output_path, max_retry_rounds=max_retry_rounds, **kwargs)
        self.batch_ids = batch_ids
        self._submitted_by = _submitting_task_id(batch_ids)

    def _upstream_record(self, context: Context) -> SubmissionRecord | None:
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

    def _first_round(self) -> list[str] | None:
        return normalize_batch_ids(self.batch_ids)

    def execute(self, context: Context) -> dict[str, Any]:  # type: ignore[override]
        if self.max_retry_rounds:
            return super().execute(context)
        from airflow_provider_claude_batch.output.land import LandingSettings, expected_from_record, land_results
        from airflow_provider_claude_batch.results.pricing import prices_from_overrides
        from airflow_provider_claude_batch.storage import as_path

        ids = normalize_batch_ids(self.batch_ids)
        context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=ids)
        output = as_path(self.output_path, self.storage_conn_id)
        settings = LandingSettings(
            formats=self.formats,
            expiry_warning_seconds=self.expiry_warning.total_seconds(),
            prices=prices_from_overrides(self.price_overrides) if self.price_overrides else None,
        )
        hook = self._hook()
        expected = expected_from_record(self._upstream_record(context))
        with refusals_fail_the_task(hook, lambda: ids, "to report on or serve the batches"):
            manifest = land_results(hook, ids, output, settings, expected=expected)
        self._landed = (str(output), ids)
        return finish_landing(self, context, manifest, output, ids)


def _submitting_task_id(batch_ids: Any) -> str | None:
    """The task whose XCom `batch_ids` is (e.g. ``submit.output``), to find its submission record."""
    from airflow_provider_claude_batch._compat import plain_xcom_source

    source = plain_xcom_source(batch_ids)
    if source is not None and source[1] in ("return_value", BATCH_IDS_XCOM_KEY):
        return source[0]
    return None


def _landed_manifest(folder: ObjectStoragePath, batch_ids: list[str]) -> dict[str, Any] | None:
    """The round's manifest if that round was already landed from exactly these batches."""
    import msgspec

    from airflow_provider_claude_batch.storage import read_bytes_if_exists

    data = read_bytes_if_exists(folder / "_manifest.json")
    if data is None:
        return None
    manifest: dict[str, Any] = msgspec.json.decode(data)
    return manifest if [b["id"] for b in manifest.get("batches", [])] == batch_ids else None


def finish_landing(
    operator: Any, context: Context, manifest: Mapping[str, Any], output: ObjectStoragePath, batch_ids: list[str]
) -> dict[str, Any]:
    """Report, announce the asset, apply the failure policy, and return the manifest's summary for XCom."""
    from airflow_provider_claude_batch.exceptions import TooManyFailuresError

    report_manifest(operator.log, manifest)
    _emit_asset_event(context, operator.outlets, output)
    fraction = manifest["failed_fraction"]
    if operator.max_failed_fraction is not None and fraction > operator.max_failed_fraction:
        raise TooManyFailuresError(
            f"{manifest['failed']} of {manifest['requests']} requests failed ({fraction:.1%} > "
            f"max_failed_fraction {operator.max_failed_fraction:.1%}); the results were landed under {output}.",
            batch_ids,
        )
    summary = {
        k: manifest[k]
        for k in ("output_path", "requests", "counts", "failed", "failed_fraction", "usage_total", "cost")
    }
    if "rounds" in manifest:
        summary["rounds"] = [
            {k: r[k] for k in ("round", "batch_ids", "requests", "counts")} for r in manifest["rounds"]
        ]
    return summary | {"batch_ids": batch_ids}


def report_manifest(log: Any, manifest: Mapping[str, Any]) -> None:
    """The landing's summary in the task log: counts, tokens, dollars at batch vs standard price."""
    cost = manifest["cost"]
    usage = manifest["usage_total"]
    log.info(
        "Landed %d results under %s: %s",
        manifest["requests"],
        manifest["output_path"],
        ", ".join(f"{n} {k}" for k, n in manifest["counts"].items() if n),
    )
    log.info(
        "Tokens: %d input, %d output, %d cache writes (5m) + %d (1h), %d cache reads",
        usage.get("input_tokens", 0),
        usage.get("output_tokens", 0),
        usage.get("cache_write_5m_tokens", 0),
        usage.get("cache_write_1h_tokens", 0),
        usage.get("cache_read_tokens", 0),
    )
    log.info(
        "Cost: $%.4f at batch price; $%.4f at standard price; saved $%.4f (prices as of %s)",
        cost["batch_usd"],
        cost["standard_usd"],
        cost["savings_usd"],
        cost["prices_as_of"],
    )
    if cost["unpriced_models"]:
        log.warning(
            "No price known for %s: their tokens are reported without dollars; pass price_overrides to price them",
            ", ".join(cost["unpriced_models"]),
        )
    if manifest["failed"]:
        log.warning(
            "%d of %d requests failed (%s); their rows are in failures.jsonl",
            manifest["failed"],
            manifest["requests"],
            ", ".join(f"{n} {k}" for k, n in manifest["error_types"].items()) or "canceled/expired",
        )


def openlineage_facets(landed: tuple[str, list[str]] | None) -> Any:
    """OpenLineage (when its provider is installed): the batches in, the output location out."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    if landed is None:
        return OperatorLineage()
    output, batch_ids = landed
    scheme, _, rest = output.partition("://")
    if not rest:
        scheme, rest = "file", output
    bucket, _, key = rest.partition("/")
    namespace = f"{scheme}://{bucket}" if scheme != "file" else "file"
    name = key.rstrip("/") if scheme != "file" else "/" + rest.strip("/")
    return OperatorLineage(
        inputs=[Dataset(namespace="anthropic://message-batches", name=b) for b in batch_ids],
        outputs=[Dataset(namespace=namespace, name=name)],
    )


def _output_asset(output_path: Any, task_id: str) -> Any:
    """A fixed output path is an Asset; a templated one is announced through an AssetAlias at run time."""
    from airflow.sdk import Asset, AssetAlias

    text = str(output_path)
    if "{{" in text or "{%" in text:
        return AssetAlias(name=f"claude_batch_results__{task_id}")
    return Asset(uri=_asset_uri(text))


def _asset_uri(location: str) -> str:
    """A URI for an output location: object-store URIs as they are, local paths as file:// URIs."""
    uri = location if "://" in location else "file://" + os.path.abspath(location)
    return uri.rstrip("/")


def _emit_asset_event(context: Context, outlets: Sequence[Any], output: ObjectStoragePath) -> None:
    from airflow.sdk import Asset, AssetAlias

    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            context["outlet_events"][outlet].add(Asset(uri=_asset_uri(str(output))))
