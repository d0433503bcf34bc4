"""What the Claude Batch operators share: batch-ID arguments, XCom publishing, parameter ownership."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch._compat import conf
from airflow_provider_claude_batch.operators.links import BATCH_IDS_XCOM_KEY

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import RuntimeTaskInstanceProtocol

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.operators.lineage import Landed, Lineage
    from airflow_provider_claude_batch.submit.record import SubmissionRecord
    from airflow_provider_claude_batch.wait.waiting import Waiting, WaitPolicy

SUBMISSION_RECORD_XCOM_KEY = "submission_record"

# Parameters that belong to another role (or moved into a policy): the hint says where they go.
_SUBMIT = "a submit parameter: give it to ClaudeBatchSubmitOperator or ClaudeBatchOperator"
_LAND = "a landing parameter: give it to ClaudeBatchResultsOperator or ClaudeBatchOperator"
MOVED_PARAMETERS: Mapping[str, str] = {
    "max_queued_requests": "now queue=QueuePolicy(max_queued_requests=...)",
    "queue_check_interval": "now queue=QueuePolicy(max_queued_requests=..., check_interval=...)",
    "max_poll_interval": "now wait_policy=WaitPolicy(max_poll_interval=...)",
    "polling_error_budget": "now wait_policy=WaitPolicy(error_budget=...)",
    "wait_timeout": "now wait_policy=WaitPolicy(timeout=...)",
    "expiry_warning": "now landing_policy=LandingPolicy(expiry_warning=...)",
    "price_overrides": "now landing_policy=LandingPolicy(price_overrides=...)",
}


def submit_parameters() -> dict[str, str]:
    """The `Submission` step's parameters, each with the hint for an operator that does not submit."""
    from airflow_provider_claude_batch.submit.submission import Submission

    return {f.name: _SUBMIT for f in dataclasses.fields(Submission)}


LANDING_PARAMETERS = dict.fromkeys(("output_path", "formats", "max_failed_fraction", "landing_policy"), _LAND)


def reject_foreign_parameters(operator: str, given: Mapping[str, object], foreign: Mapping[str, str]) -> None:
    """A parameter of another role (or an old spelling) is a TypeError that says where it belongs."""
    wrong = {name: hint for name, hint in {**foreign, **MOVED_PARAMETERS}.items() if name in given}
    if wrong:
        details = "; ".join(f"{name} is {hint}" for name, hint in wrong.items())
        raise TypeError(f"{operator} does not take {', '.join(wrong)}: {details}.")


def step_arguments(step: type, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The operator's arguments that are `step`'s fields (a dataclass), by name: each listed once, in the step.

    A text `queue` is Airflow's own executor queue (BaseOperator's `queue`, which a mapped operator on
    Airflow 3.0 fills from its defaults), not the step's `QueuePolicy`: it is left for Airflow.
    """
    return {
        f.name: arguments[f.name]
        for f in dataclasses.fields(step)
        if f.name in arguments and not (f.name == "queue" and isinstance(arguments[f.name], str))
    }


def takes_step_fields(step: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give an operator `__init__` that passes `step`'s fields on through ``**kwargs`` a signature listing them.

    Airflow reads an operator's parameters from its signature: `default_args` fill only listed
    parameters, and ``.partial().expand()`` refuses unlisted ones. One list of fields (the step's
    dataclass) then serves every operator that composes the step.
    """

    def with_fields(init: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(init)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        rest = [p for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD]
        taken = {p.name for p in own}
        fields = [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_field_default(f), annotation=f.type)
            for f in dataclasses.fields(step)
            if f.name not in taken
        ]
        init.__signature__ = signature.replace(parameters=[*own, *fields, *rest])  # type: ignore[attr-defined]
        return init

    return with_fields


def _field_default(field: dataclasses.Field[Any]) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return inspect.Parameter.empty


def default_deferrable() -> bool:
    """Airflow's `[operators] default_deferrable`, the default of every `deferrable` parameter."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def link_upstream(operator: BaseOperator, *values: object) -> None:
    """Make XComArgs given to non-templated arguments set their upstream dependency, as templated ones do."""
    from airflow_provider_claude_batch._compat import link_upstream as link

    for value in values:
        if value is not None:
            link(operator, value)


def normalize_batch_ids(value: object) -> list[str]:
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
    from airflow_provider_claude_batch.results.checks import check_batch_ids

    check_batch_ids(ids)
    return list(dict.fromkeys(ids))


def publish_record(context: Context, record: SubmissionRecord) -> None:
    """Batch IDs to XCom as soon as each exists (the Console links and downstream read them)."""
    if record.batch_ids:
        context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=record.batch_ids)
        context["ti"].xcom_push(key="batch_id", value=record.batch_ids[0])
        # What a downstream results task checks each batch's results against (counts and custom_ids'
        # sha256, about 200 bytes a batch): the record itself may sit in this task's own state store.
        context["ti"].xcom_push(key=SUBMISSION_RECORD_XCOM_KEY, value=record.to_dict())


@contextmanager
def refusals_fail_the_task(hook: ClaudeBatchHook, batch_ids: Callable[[], Sequence[str]], doing: str) -> Iterator[None]:
    """An API refusal (401/403/404/407) while `doing` becomes the documented `BatchApiRefusedError`,
    not retried: a retry would be refused the same way. `batch_ids()` names the batches made so far.
    """
    import anthropic

    from airflow_provider_claude_batch.exceptions import BatchApiRefusedError
    from airflow_provider_claude_batch.wait.errors import REFUSED_STATUSES

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


def make_hook(conn_id: str) -> ClaudeBatchHook:
    """The hook every step of one task does its I/O through."""
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

    return ClaudeBatchHook(claude_batch_conn_id=conn_id)


def waiting_step(
    conn_id: str, deferrable: bool | None, poll_interval: float, cancel_on_kill: bool, policy: WaitPolicy | None
) -> Waiting:
    """The wait step from an operator's flat parameters (``deferrable=None``: Airflow's default)."""
    from airflow_provider_claude_batch.wait.waiting import Waiting, WaitPolicy

    chosen = default_deferrable() if deferrable is None else deferrable
    return Waiting(conn_id, chosen, poll_interval, cancel_on_kill, policy or WaitPolicy())


class HoldsBatches:
    """Plumbing (not a role) of a task whose batches cost money: which ones now, and ``on_kill``."""

    claude_batch_conn_id: str
    waiting: Waiting
    _batch_ids: list[str]
    _context: Context | None

    def _batches_now(self, batch_ids: list[str]) -> None:
        self._batch_ids = batch_ids

    def on_kill(self) -> None:
        """Cancel the task's batches only when a user marked the task failed (and ``cancel_on_kill``)."""
        self.waiting.cancel_if_user_failed_the_task(
            make_hook(self.claude_batch_conn_id), self._batch_ids, self._context
        )


class LandsResults(HoldsBatches):
    """Plumbing of a task that lands results: what it landed, reported to OpenLineage."""

    _landed: Landed | None

    def get_openlineage_facets_on_complete(self, task_instance: RuntimeTaskInstanceProtocol) -> Lineage:
        """OpenLineage (when its provider is installed): the batches in, the output location out."""
        from airflow_provider_claude_batch.operators.lineage import openlineage_facets

        return openlineage_facets(self._landed)
