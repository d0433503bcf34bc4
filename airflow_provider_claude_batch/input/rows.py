"""Rows (from a list, a CSV or a JSONL file) made into requests, by a params template or the user's function."""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.requests.prepare import Problem

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

# A row is the user's data, whatever its columns hold: their function declares what it reads.
ParamsBuilder = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class RowError(ValueError):
    """A row a template cannot fill: the message is the reason shown for the row, as is."""


class TemplateError(ValueError):
    """A params_template that no row could fill (a bad placeholder): refused before any row is read."""


def params_builder(template: Mapping[str, object] | None, build: ParamsBuilder | None) -> ParamsBuilder:
    """The one way rows become params: the user's `build_params`, or `params_template` checked once."""
    if (template is None) == (build is None):
        raise BatchInputError("Rows need exactly one of params_template or build_params to become requests.")
    if build is not None:
        return build
    try:
        return template_params_builder(template or {})
    except TemplateError as exc:
        raise BatchInputError(f"{exc}. Nothing was submitted.") from None


def rows_to_requests(
    rows: Iterable[tuple[int, object]], *, custom_id_column: str, build_params: ParamsBuilder
) -> Iterator[tuple[int, object]]:
    """ETL input: each row becomes `{"custom_id": row[custom_id_column], "params": build_params(row)}`.

    Whatever `build_params` raises is that row's problem, named with its line, never an error that
    ends the task with a traceback (and would be retried, failing the same way).
    """
    for number, row in rows:
        if isinstance(row, Problem):
            yield number, row
            continue
        if not isinstance(row, Mapping):
            yield number, Problem(number, None, f"a row must be an object, got {type(row).__name__}")
            continue
        custom_id = row.get(custom_id_column)
        reason = _custom_id_column_reason(custom_id, custom_id_column)
        if reason is not None:
            yield number, Problem(number, None, reason)
            continue
        yield number, _request(number, str(custom_id), row, build_params)


def _custom_id_column_reason(custom_id: object, column: str) -> str | None:
    if custom_id is None or custom_id == "":
        return f"column {column!r} is missing or empty"
    if isinstance(custom_id, bool) or not isinstance(custom_id, str | int):  # 1.0 would become "1.0"
        return f"column {column!r} must be text or a whole number, got {type(custom_id).__name__} {custom_id!r:.40}"
    return None


def _request(number: int, custom_id: str, row: Mapping[str, object], build_params: ParamsBuilder) -> object:
    try:
        params = cast("object", build_params(row))  # the user's code may return anything
    except RowError as exc:
        return Problem(number, custom_id, str(exc))
    except Exception as exc:  # the user's code: any failure is this row's
        return Problem(number, custom_id, f"could not build params from the row: {exc!r:.300}")
    if not isinstance(params, Mapping):
        return Problem(number, custom_id, f"build_params returned {type(params).__name__}, not a dict of params")
    return {"custom_id": custom_id, "params": params}


def template_params_builder(template: Mapping[str, object]) -> ParamsBuilder:
    """Params from a template whose strings use `{column}` placeholders (`{{`/`}}` for literal braces).

    `str.format` syntax rather than Jinja, because Airflow renders Jinja when the task starts, long
    before there is a row to render it with. A placeholder names a column, nothing else (no
    `{col.attr}`, `{col[0]}` or `{}`: those read Python attributes, not data), and the template is
    checked once, before any row. A row whose value for a placeholder is missing, empty or not text
    or a number is refused, rather than sending "None" or a Python repr to the model.
    """
    if not isinstance(template, Mapping):
        raise TemplateError(f"params_template must be a dict of params, got {type(template).__name__}")
    placeholders: dict[str, tuple[str, ...]] = {}  # each string of the template: the columns it names

    def compile_(value: object, path: str) -> None:
        if isinstance(value, str):
            placeholders[value] = _placeholders(value, path)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                compile_(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                compile_(item, f"{path}[{index}]")

    compile_(template, "params_template")

    def render(value: object, row: Mapping[str, object]) -> object:
        if isinstance(value, str):
            for name in placeholders[value]:
                _check_placeholder_value(row, name)
            return value.format_map(row)
        if isinstance(value, Mapping):
            return {k: render(v, row) for k, v in value.items()}
        if isinstance(value, list):
            return [render(v, row) for v in value]
        return value

    def build(row: Mapping[str, object]) -> Mapping[str, object]:
        try:
            return cast("Mapping[str, object]", render(template, row))
        except RowError:
            raise
        except (ValueError, TypeError) as exc:  # e.g. a format spec the value does not take: `{name:d}`
            raise RowError(f"could not fill params_template: {exc}") from None

    return build


def _placeholders(text: str, path: str) -> tuple[str, ...]:
    """The column names a template string's placeholders name; TemplateError for any other placeholder."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{path}: {exc} in {text!r:.80} (write {{{{ and }}}} for literal braces)") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if (
            not name
            or name.isdigit()
            or "." in name
            or "[" in name
            or "{" in (spec or "")
            or conversion not in (None, "s", "r", "a")
        ):
            raise TemplateError(
                f"{path}: placeholder {{{name}}} must name a column, as {{column}} "
                "(no positions, attributes, indexes or nested placeholders)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def _check_placeholder_value(row: Mapping[str, object], name: str) -> None:
    if name not in row:
        columns = ", ".join(repr(column) for column in list(row)[:12])
        raise RowError(f"placeholder {{{name}}} names no column of the row (its columns: {columns})")
    value = row[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError(f"placeholder {{{name}}}: the row's value is empty")
    if isinstance(value, float) and not math.isfinite(value):
        raise RowError(f"placeholder {{{name}}}: the row's value is {value!r}")
    if not isinstance(value, str | int | float):
        raise RowError(
            f"placeholder {{{name}}}: the row's value is a {type(value).__name__}; a template places "
            "text and numbers (use build_params for anything else)"
        )
