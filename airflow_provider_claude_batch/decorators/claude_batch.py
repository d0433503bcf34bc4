"""`@task.claude_batch`: the decorated function returns the requests (or rows); the task then runs
`ClaudeBatchOperator`'s one-task flow on them.

What the function returned is stored as `input.jsonl`, so a deferred task resumes (on whichever
worker) on exactly that input rather than calling the function again: next to the submission
record when that is a file (`state_path`, or the local default), else under
`output_path/.claude_batch/<dag>/<run>/<task>/`, since the task state store is for small values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from airflow_provider_claude_batch._compat import context_merge, determine_kwargs
from airflow_provider_claude_batch.exceptions import BatchInputError, InvalidRequestsError
from airflow_provider_claude_batch.operators.one_task import ClaudeBatchOperator
from airflow_provider_claude_batch.requests.prepare import SHOWN_PROBLEMS, Problem
from airflow_provider_claude_batch.requests.schema import not_json_reason
from airflow_provider_claude_batch.submit.submission import Submission, task_key

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath
    from airflow.sdk.bases.decorator import TaskDecorator

    from airflow_provider_claude_batch.output.landing import Manifest


INPUT_NAME = "input.jsonl"
INPUT_FOLDER = ".claude_batch"


class _ClaudeBatchDecoratedOperator(DecoratedOperator, ClaudeBatchOperator):
    """The one-task operator, its input what the decorated function returned (stored, then read back)."""

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *ClaudeBatchOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {**DecoratedOperator.template_fields_renderers}
    custom_operator_name: str = "@task.claude_batch"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)

    @property
    def _rows_mode(self) -> bool:
        return self.submission.params_template is not None or self.submission.build_params is not None

    def execute(self, context: Context) -> Manifest:
        """Call the function, store what it returned, and run the one-task flow on that."""
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        returned = self.python_callable(*self.op_args, **kwargs)
        if isinstance(returned, str | bytes | Mapping) or not isinstance(returned, Collection):
            raise BatchInputError(
                f"@task.claude_batch functions return a list of {'rows' if self._rows_mode else 'requests'}, "
                f"not {type(returned).__name__}; nothing was submitted."
            )
        self._store_input(context, returned)
        return ClaudeBatchOperator.execute(self, context)

    def _input_path(self, context: Context) -> ObjectStoragePath:
        from airflow_provider_claude_batch.storage import as_path
        from airflow_provider_claude_batch.submit.path_store import PathRecordStore

        store = self.submission.record_store(context)
        key = task_key(context)
        if isinstance(store, PathRecordStore):
            return store.folder(key) / INPUT_NAME
        output = as_path(self.output_path, self.submission.storage_conn_id)
        return output / INPUT_FOLDER / key.relative_path() / INPUT_NAME

    def _store_input(self, context: Context, items: Collection[Any]) -> None:
        from airflow_provider_claude_batch.storage import read_bytes_if_exists, write_atomically

        lines, problems, bad = _json_lines(
            items,
            "row" if self._rows_mode else "request",
            self.submission.custom_id_column if self._rows_mode else "custom_id",
        )
        if bad:
            raise InvalidRequestsError([str(p) for p in problems], bad, len(lines))
        path = self._input_path(context)
        stored = read_bytes_if_exists(path)
        # A retry or clear calls the function again, and a set or an unordered query gives the same
        # requests in another order: the same work, so the stored order (and fingerprint) is kept.
        if stored is not None and sorted(stored.split(b"\n")[:-1]) == sorted(line[:-1] for line in lines):
            return
        write_atomically(path, b"".join(lines))

    def submission_for(self, context: Context) -> Submission:
        """The submit step reading the stored input (JSONL rows or requests) instead of calling the function."""
        path = str(self._input_path(context))
        if self._rows_mode:
            return dataclasses.replace(self.submission, rows_path=path, rows_format="jsonl", rows=None, requests=None)
        return dataclasses.replace(self.submission, requests_path=path, requests=None, rows=None)


def _json_lines(items: Collection[Any], kind: str, id_key: str) -> tuple[list[bytes], list[Problem], int]:
    """Each item as a JSONL line, and the items JSON cannot hold as they are. msgspec would store NaN
    as null, a set as a list and bytes as base64 text, which the JSONL road then sends as valid.
    """
    encoder, decoder = msgspec.json.Encoder(), msgspec.json.Decoder()
    lines: list[bytes] = []
    problems: list[Problem] = []
    bad = 0
    for number, item in enumerate(items, start=1):
        reason = None
        try:
            line = encoder.encode(item)
            if decoder.decode(line) != item:
                reason = not_json_reason(item, kind)
        except (TypeError, ValueError, RecursionError) as exc:  # (msgspec's errors and UnicodeEncodeError)
            line, reason = b"", not_json_reason(item, kind) or f"{exc}"
        lines.append(line + b"\n")
        if reason is not None:
            bad += 1
            custom_id = item.get(id_key) if isinstance(item, Mapping) else None
            if len(problems) < SHOWN_PROBLEMS:
                problems.append(
                    Problem(
                        number, custom_id if isinstance(custom_id, str) else None, f"not JSON-serializable: {reason}"
                    )
                )
    return lines, problems, bad


def claude_batch_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function returning requests (or rows, with ``params_template``/``build_params``) into
    a ``ClaudeBatchOperator``; every keyword is that operator's (``output_path`` is required).
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_ClaudeBatchDecoratedOperator, **kwargs
    )
