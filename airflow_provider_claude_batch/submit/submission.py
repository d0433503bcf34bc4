"""The submit step: read and validate the input, then create each planned batch exactly once.

`Submission` holds the submit settings (input, request defaults, limits, where the record lives,
the queue guard) and does its I/O through a hook and a record store; the submit operator, the
one-task operator, the decorator and the results operator's resubmission rounds compose it. The
create-once-and-adopt rules are `submit.create.Submitter`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES, API_MAX_REQUESTS
from airflow_provider_claude_batch.submit.policy import CreatePolicy

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.requests.plan import BatchPlan
    from airflow_provider_claude_batch.requests.prepare import PreparedRequests
    from airflow_provider_claude_batch.requests.structured import Form
    from airflow_provider_claude_batch.results.pricing import ModelPrice
    from airflow_provider_claude_batch.submit.canary import CanaryWait
    from airflow_provider_claude_batch.submit.create import Submitter
    from airflow_provider_claude_batch.submit.record import SubmissionRecord, TaskKey
    from airflow_provider_claude_batch.submit.store import RecordStore
    from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchQueueTrigger
    from airflow_provider_claude_batch.wait.waiting import Deferrable

log = logging.getLogger(__name__)

# A request as given: {"custom_id", "params"}; a row: any mapping of columns.
RequestLike = Mapping[str, Any]
PARAMS_DOC = """
    :param requests: a list of ``{"custom_id", "params"}`` (or an XComArg giving one). Exactly one of
        ``requests``, ``requests_path``, ``rows``, ``rows_path``; everything is validated before any call.
    :param requests_path: a JSONL file of such requests on any object storage (templated).
    :param rows: rows (dicts) turned into requests by ``params_template`` or ``build_params``.
    :param rows_path: a JSONL or CSV file of rows (templated).
    :param rows_format: ``"jsonl"`` or ``"csv"`` when ``rows_path``'s suffix does not say.
    :param custom_id_column: the row column holding each request's custom_id.
    :param params_template: params with ``{column}`` placeholders, filled from each row.
    :param build_params: ``row -> params``, for what a template cannot say (runs in the worker).
    :param model: the model for requests whose params name none (templated).
    :param max_tokens: the output cap for requests whose params set none: it bounds each request's cost.
    :param system: the system prompt for requests whose params have none (templated).
    :param max_requests_per_batch: split into batches of at most this many requests (API cap 100,000);
        smaller batches end sooner but each is one more create to pay attention to.
    :param max_batch_bytes: split so no batch body exceeds this (API cap 256 MB).
    :param storage_conn_id: the connection for object-storage paths (input, state, output).
    :param state_path: where the submission record lives (templated; default: the task state store). It
        is what stops a retry on another worker from paying twice: it must be storage every worker shares.
    :param force_resubmit: submit anew even when the record shows this input was submitted: pays again.
    :param queue: a `QueuePolicy`: wait (deferred) for room in the workspace's queue before each create.
    :param create_policy: a `CreatePolicy`: create attempts, lost-answer reconciliation, claims.
    :param output_type: a Pydantic model class or a JSON schema dict: every request asks for an object of
        that schema (natively where the Models API reports structured outputs for its model, else by one
        forced tool; one free Models API lookup per model), results are validated and land as typed
        columns. Requests that set their own ``tools``, ``tool_choice`` or ``output_config.format`` are
        refused before spend. The schema is part of the fingerprint: changing it submits anew.
    :param preflight: before any create, ask the API for free (one Models API lookup per model, a few
        dozen token counts) what it would refuse: an unknown or retired model, sampling fields the API
        version or model refuses, max_tokens over the model's limit, a prompt over its context window;
        such requests fail the task by line, with nothing paid. Also logs the cost estimate and keeps it
        for the manifest. Off: nothing is checked beyond the request schema, and no estimate.
    :param max_cost_usd: fail before any create (not retried) when even the estimate's low figure (inputs
        at batch price, no output) is over this many dollars; warn when only its high figure (every
        request writing its max_tokens) is. Needs ``preflight``.
    :param canary_requests: submit the first N requests as a batch of their own and wait for it (deferred
        when ``deferrable``); if any of them fails for its own reasons (invalid request, refused model...),
        the rest is not submitted and the task fails naming them. Costs one batch's latency more.
    :param prompt_caching: ``"auto"`` (default): the longest prefix (tools, system, leading messages) that
        two or more requests of a model share, if long enough to cache, gets one 1-hour
        ``cache_control`` breakpoint, so the batch reads it at a tenth of the input price instead of
        paying it on every request; requests with their own ``cache_control`` are sent as written.
        ``"off"``: requests are sent as given. Either way, the choice is part of the fingerprint.
    :param cache_warmup: before the first create, one Messages call (``max_tokens=1``, standard price) per
        shared prefix writes the cache, so the batch's first requests read it too; paid once (a retry that
        re-attaches does not repeat it) and shown in the manifest.
"""
PROMPT_CACHING_MODES = ("auto", "off")


@dataclass(frozen=True)
class QueuePolicy:
    """The queue guard: wait for room before creating, so many tasks at once are not refused.

    :param max_queued_requests: create a batch only while the workspace's queued requests plus its
        own stay at or under this; a batch larger than it can never be created (refused up front).
    :param check_interval: seconds between looks at the queue while waiting (one List page or more each).
    """

    max_queued_requests: int
    check_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.max_queued_requests < 1:
            raise ValueError(f"max_queued_requests must be at least 1, not {self.max_queued_requests}")
        if self.check_interval <= 0:
            raise ValueError(f"check_interval must be > 0 seconds, not {self.check_interval}")


@dataclass
class Submission:
    """The submit step: its settings (below), reading and planning the input, creating each batch once.

    Mutable only so that Airflow renders its templated fields in place (`template_fields`).
    """

    template_fields: ClassVar[tuple[str, ...]] = ("requests_path", "rows_path", "state_path", "model", "system")

    requests: Iterable[RequestLike] | None = None
    requests_path: str | ObjectStoragePath | None = None
    rows: Iterable[RequestLike] | None = None
    rows_path: str | ObjectStoragePath | None = None
    rows_format: str | None = None
    custom_id_column: str = "custom_id"
    params_template: Mapping[str, Any] | None = None
    build_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    model: str | None = None
    max_tokens: int | None = None
    system: str | list[Any] | None = None
    max_requests_per_batch: int = API_MAX_REQUESTS
    max_batch_bytes: int = API_MAX_BODY_BYTES
    storage_conn_id: str | None = None
    state_path: str | ObjectStoragePath | None = None
    force_resubmit: bool = False
    queue: QueuePolicy | None = None
    create_policy: CreatePolicy = field(default_factory=CreatePolicy)
    output_type: Any = None
    preflight: bool = True
    max_cost_usd: float | None = None
    canary_requests: int = 0
    prompt_caching: Literal["auto", "off"] = "auto"
    cache_warmup: bool = False

    def __post_init__(self) -> None:
        from airflow_provider_claude_batch.requests.output_type import check_output_type

        check_output_type(self.output_type)
        if self.prompt_caching not in PROMPT_CACHING_MODES:
            raise ValueError(f"prompt_caching is 'auto' or 'off', not {self.prompt_caching!r}")
        if self.cache_warmup and self.prompt_caching == "off":
            raise ValueError("cache_warmup=True writes the cache prompt_caching='auto' sets up; it needs 'auto'")
        if not 1 <= self.max_requests_per_batch <= API_MAX_REQUESTS:
            raise ValueError(f"max_requests_per_batch must be between 1 and {API_MAX_REQUESTS} (the API's cap)")
        if not 1 <= self.max_batch_bytes <= API_MAX_BODY_BYTES:
            raise ValueError(f"max_batch_bytes must be between 1 and {API_MAX_BODY_BYTES} (under the API's 256 MB)")
        if self.max_tokens is not None and (isinstance(self.max_tokens, bool) or self.max_tokens < 1):
            raise ValueError(f"max_tokens must be a whole number of at least 1, not {self.max_tokens!r}")
        if self.queue is not None and not isinstance(self.queue, QueuePolicy):
            raise TypeError(f"queue takes a QueuePolicy(max_queued_requests=...), not {type(self.queue).__name__}")
        from airflow_provider_claude_batch.preflight.settings import check_spend_settings

        check_spend_settings(self.preflight, self.max_cost_usd, self.canary_requests)

    __doc__ = (__doc__ or "") + PARAMS_DOC

    def runtime_inputs(self) -> tuple[object, object]:
        """The inputs that may be XComArgs (their upstream tasks become dependencies)."""
        return self.requests, self.rows

    def prepare(
        self, context: Context, hook: ClaudeBatchHook | None = None
    ) -> tuple[PreparedRequests, list[BatchPlan]]:
        """Read, validate, serialize and split the input; raises before any API call if it is bad.

        With an `output_type`, `hook` asks the Models API (free) how each model takes structured output.
        """
        from airflow_provider_claude_batch._compat import resolve
        from airflow_provider_claude_batch.exceptions import BatchInputError, InvalidRequestsError
        from airflow_provider_claude_batch.input.read import request_entries
        from airflow_provider_claude_batch.requests.hashing import prepare_requests
        from airflow_provider_claude_batch.requests.prepare import RequestDefaults

        entries = request_entries(
            requests=resolve(self.requests, context),
            requests_path=self.requests_path,
            rows=resolve(self.rows, context),
            rows_path=self.rows_path,
            rows_format=self.rows_format,
            custom_id_column=self.custom_id_column,
            params_template=self.params_template,
            build_params=self.build_params,
            storage_conn_id=self.storage_conn_id,
        )
        defaults = RequestDefaults(model=self.model, max_tokens=self.max_tokens, system=self.system)
        if self.output_type is not None:
            entries = self._asking_for_output(entries, hook)
        prepared, problems, bad = prepare_requests(
            entries, defaults, max_body_bytes=self.max_batch_bytes, spill_above_requests=self.max_requests_per_batch
        )
        if bad:
            raise InvalidRequestsError([str(p) for p in problems], bad, prepared.requests_read)
        if not len(prepared):
            raise BatchInputError("The input has no requests; nothing was submitted.")
        if self.prompt_caching == "auto":
            uncached, prepared = prepared, self.add_cache_breakpoints(prepared)
            if prepared.fingerprint != uncached.fingerprint and self._recorded_as(context, uncached):
                log.warning(
                    "This task instance's submission was recorded without cache breakpoints (caching was off, or "
                    "a release before it): continuing it as it was sent, so nothing is paid twice"
                )
                prepared = uncached
        plans = self.plan(prepared)
        log.info(
            "%d requests validated (%.1f MB%s); %d batch(es) planned; input fingerprint %s",
            len(prepared),
            prepared.size / 1e6,
            ", in a local spill file: one batch at a time in memory" if prepared.spilled else "",
            len(plans),
            prepared.fingerprint[:16],
        )
        return prepared, plans

    def _asking_for_output(self, entries: Iterable[tuple[int, object]], hook: ClaudeBatchHook | None) -> Any:
        """The entries, each asking for `output_type` in the form its model takes (see `structured_form`)."""
        from airflow_provider_claude_batch.exceptions import BatchInputError
        from airflow_provider_claude_batch.output.landing import spec_of
        from airflow_provider_claude_batch.requests.structured import with_output

        spec = spec_of(self.output_type)
        if spec is None or hook is None:
            raise BatchInputError("output_type needs the Models API: this submit step was given no connection")
        forms: dict[str, Form] = {}

        def form_for(model: str) -> Form:
            if model not in forms:
                forms[model] = structured_form(hook, model)
            return forms[model]

        return with_output(entries, spec, self.model, form_for)

    def add_cache_breakpoints(self, prepared: PreparedRequests) -> PreparedRequests:
        """`prepared` with a 1-hour breakpoint closing each shared prefix (requests/caching.py), logged."""
        import time

        from airflow_provider_claude_batch.requests.caching import add_cache_breakpoints

        started = time.perf_counter()
        cached, plan = add_cache_breakpoints(prepared, warmup=self.cache_warmup)
        cached.cache_plan = plan
        log.info("%s (%.2f s)", plan.describe(), time.perf_counter() - started)
        return cached

    def _recorded_as(self, context: Context, prepared: PreparedRequests) -> bool:
        """Whether this task instance's submission record is for `prepared` (the same input, as sent)."""
        existing = self.record_store(context).load(task_key(context))
        return existing is not None and prepared.recognises(existing.fingerprint)

    def plan(self, prepared: PreparedRequests, *, canary: bool = True) -> list[BatchPlan]:
        """Split `prepared` into batches within the limits (the canary first, unless `canary=False`: a
        follow-up round); refuses a batch the queue guard could never fit.
        """
        from airflow_provider_claude_batch.exceptions import BatchInputError
        from airflow_provider_claude_batch.requests.plan import plan_batches

        plans = plan_batches(
            prepared,
            max_requests=self.max_requests_per_batch,
            max_body_bytes=self.max_batch_bytes,
            canary=self.canary_requests if canary else 0,
        )
        if self.queue is not None:
            largest = max(p.request_count for p in plans)
            if largest > self.queue.max_queued_requests:
                raise BatchInputError(
                    f"A batch of {largest} requests can never fit max_queued_requests="
                    f"{self.queue.max_queued_requests}; lower max_requests_per_batch."
                )
        return plans

    def has_canary(self, prepared: PreparedRequests) -> bool:
        """Whether part 0 is a canary: ``canary_requests`` set, and fewer than the requests."""
        return 0 < self.canary_requests < len(prepared)

    def record_store(self, context: Context) -> RecordStore:
        """Where this task instance's submission record lives (see `submit.store`); raises before any API
        call when that would be a disk other workers cannot read.
        """
        from airflow_provider_claude_batch.submit.store import open_record_store

        return open_record_store(
            state_path=self.state_path,
            storage_conn_id=self.storage_conn_id,
            context=context,
            settle_seconds=self.create_policy.claim_settle_seconds,
        )

    def open(
        self,
        hook: ClaudeBatchHook,
        store: RecordStore,
        context: Context,
        prepared: PreparedRequests,
        plans: list[BatchPlan],
        *,
        force_resubmit: bool | None = None,
        estimate: dict[str, Any] | None = None,
    ) -> tuple[Submitter, SubmissionRecord]:
        """The record to continue (re-attached, adopted from a concurrent attempt, or new: with `estimate`)
        and its submitter.
        """
        from airflow_provider_claude_batch.submit.create import Submitter

        submitter = Submitter(hook, store, self.create_policy)
        force = self.force_resubmit if force_resubmit is None else force_resubmit
        record = submitter.open_record(
            task_key(context),
            prepared,
            plans,
            force_resubmit=force,
            attempt_id=str(context["ti"].id),
            estimate=estimate,
        )
        return submitter, record

    def check_before_spend(
        self,
        hook: ClaudeBatchHook,
        store: RecordStore,
        context: Context,
        prepared: PreparedRequests,
        *,
        prices: Mapping[str, ModelPrice] | None = None,
        standard_price: bool = False,
    ) -> dict[str, Any] | None:
        """Preflight and the cost estimate (see `preflight.run`), before the record and any create; raises
        what the API would refuse. Skipped (the recorded estimate kept) when this input's batches exist:
        a retry or a resumed task re-attaches, the money is already in flight. `standard_price`: the
        requests go through the Messages API, so the budget is held at the standard price.
        """
        if not self.preflight:
            return None
        existing = store.load(task_key(context))
        continued = existing is not None and (not self.force_resubmit or existing.attempt_id == str(context["ti"].id))
        if existing is not None and continued and existing.batch_ids and prepared.recognises(existing.fingerprint):
            log.info("Preflight skipped: this input's batches exist (%s)", ", ".join(existing.batch_ids))
            return existing.estimate
        from airflow_provider_claude_batch.preflight.run import run_preflight

        estimate = run_preflight(
            hook, prepared, max_cost_usd=self.max_cost_usd, prices=prices, standard_price=standard_price
        )
        return estimate.to_dict()

    def submit_parts(
        self,
        task: Deferrable,
        submitter: Submitter,
        record: SubmissionRecord,
        prepared: PreparedRequests,
        plans: list[BatchPlan],
        *,
        on_part: Callable[[SubmissionRecord], None],
        resume_with: str,
        error_budget: float,
        canary: CanaryWait | None = None,
    ) -> SubmissionRecord:
        """Give every planned batch its batch, part by part; defers to `resume_with` while the queue is full.

        With `canary` (and ``canary_requests``), part 0 is the canary: before part 1 is created, it waits
        for the canary to end (deferred to `canary.resume_with` when deferrable) and reads its results.
        """
        for part in record.parts:
            if part.batch_id is None:
                if part.index == 1 and canary is not None and self.has_canary(prepared):
                    canary.check(task, submitter.hook, record, prepared)
                trigger = self.queue_wait(submitter.hook, part.request_count, error_budget)
                if trigger is not None:
                    task.defer(trigger=trigger, method_name=resume_with)
                # Once the queue has room (a warm-up before a long wait could expire first), and once only.
                record = self.warm_cache(submitter, record, prepared)
            record = submitter.submit_part(record, record.parts[part.index], prepared, plans[part.index])
            on_part(record)
        return record

    def warm_cache(
        self, submitter: Submitter, record: SubmissionRecord, prepared: PreparedRequests
    ) -> SubmissionRecord:
        """With `cache_warmup`, write the shared prefixes before the first create, once: the record says so."""
        plan = prepared.cache_plan
        if not self.cache_warmup or plan is None or not plan.prefixes or record.warmup is not None:
            return record
        if record.batch_ids:  # a batch already runs: too late to help it
            return record
        from airflow_provider_claude_batch.submit.warmup import warm_cache

        return submitter.save(record.with_warmup(warm_cache(submitter.hook, plan)))

    def queue_wait(self, hook: ClaudeBatchHook, needed: int, error_budget: float) -> ClaudeBatchQueueTrigger | None:
        """None when `needed` more requests fit the queue guard (or there is none); else the trigger to wait on."""
        if self.queue is None:
            return None
        from airflow_provider_claude_batch.submit.queue import fits
        from airflow_provider_claude_batch.submit.queue_room import queued_requests
        from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchQueueTrigger

        cap = self.queue.max_queued_requests
        queued = queued_requests(hook)
        if fits(queued, needed, cap):
            return None
        log.info(
            "%d requests already queued; %d more would exceed max_queued_requests=%d: waiting deferred",
            queued,
            needed,
            cap,
        )
        return ClaudeBatchQueueTrigger(
            needed, cap, hook.claude_batch_conn_id, poll_interval=self.queue.check_interval, error_budget=error_budget
        )


def structured_form(hook: ClaudeBatchHook, model: str) -> Form:
    """How `model` is asked for structured output: natively when the Models API reports the capability;
    by a forced tool when it reports none, or does not know the model (404: logged, as the batch will
    tell whether the model exists). An unreachable Models API fails the task before any spend (Airflow
    retries it): the form is part of the request, so guessing could make a retry look like new work.
    """
    try:
        info = hook.get_model_info(model)
    except ValueError:  # not shaped like a model ID: the batch names the problem per request
        info = None
    if info is None:
        log.warning("The Models API does not know %r: asking for the output_type through a forced tool", model)
        return "tool"
    form: Form = "native" if info.structured_outputs else "tool"
    log.info("%s: output_type asked for %s", model, "natively" if form == "native" else "through a forced tool")
    return form


def task_key(context: Context) -> TaskKey:
    """The task instance a submission belongs to, from the running task's context."""
    from airflow_provider_claude_batch.submit.record import TaskKey

    ti = context["ti"]
    map_index = ti.map_index if ti.map_index is not None else -1
    return TaskKey(dag_id=ti.dag_id, task_id=ti.task_id, run_id=ti.run_id, map_index=map_index)
