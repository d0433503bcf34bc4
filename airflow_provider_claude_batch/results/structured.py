"""Structured output on the results side: validate each succeeded result and give its row typed columns.

Pure. `OutputCheck` runs inside the landing's single pass (results/fold.py calls it once per
succeeded result): the output (a text block's JSON, or the forced tool's input) is validated against
the Pydantic model (its compiled validator) or the JSON schema (jsonschema), and the row gains one
column per top-level field, nested values as JSON text. A result that does not validate keeps its
usage and becomes a failure row with ``error_type`` ``invalid_output`` and a bounded message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.requests.structured import resolve
from airflow_provider_claude_batch.results.fold import TableRow
from airflow_provider_claude_batch.results.totals import INVALID_OUTPUT

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_claude_batch.requests.structured import OutputSpec


MESSAGE_CHARS = 500  # an invalid output's message is cut to this many characters
_ERRORS_SHOWN = 3
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def column_kind(prop: dict[str, Any], root: dict[str, Any]) -> str:
    """A top-level field's column type: integer, number, boolean or string; anything else is JSON text."""
    prop = resolve(prop, root)
    variants = [resolve(v, root) for v in prop.get("anyOf", prop.get("oneOf", []))]
    non_null = [v for v in variants if v.get("type") != "null"]
    if len(non_null) == 1:  # Optional[X]
        prop = non_null[0]
    kind = prop.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None and "enum" in prop:
        values = prop["enum"]
        kind = "string" if all(isinstance(v, str) for v in values) else None
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kind = "integer"
    return kind if kind in ("integer", "number", "boolean", "string") else "json"


class OutputCheck:
    """One landing's validator of `spec`'s output: rows in, rows with the typed columns (or the failure) out."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        fields = spec.fields
        self.columns: tuple[str, ...] = tuple(fields)
        self.kinds = {name: column_kind(prop, spec.schema) for name, prop in fields.items()}
        # Objects, arrays and unions of several types land as JSON text.
        self._json_columns = tuple(name for name, kind in self.kinds.items() if kind == "json")
        self._integers = tuple(name for name, kind in self.kinds.items() if kind == "integer")
        # A TableRow subclass: the table's columns, then the output's (empty until `check` fills them).
        self.row_type: type[TableRow] = msgspec.defstruct(  # type: ignore[assignment]
            f"{spec.tool_name}Row", [(name, Any, None) for name in self.columns], bases=(TableRow,), gc=False
        )
        self._validate = self._by_model if spec.model is not None else self._by_schema
        # check(row, output): fill a succeeded row (a `row_type`) with its output's columns and say True; or,
        # when the output does not validate, make it an invalid_output failure (its usage kept) and say False.
        self.check: Callable[[TableRow, str | bytes | None], bool] = (
            self._check_model if spec.model is not None else self._check
        )
        if spec.model is not None:
            from pydantic import ValidationError

            model: Any = spec.model
            # The model's compiled validator and serializer, called directly (no per-call Python wrapper).
            self._validate_json = model.__pydantic_validator__.validate_json
            self._to_json_values = model.__pydantic_serializer__.to_python
            self._validation_error = ValidationError
        else:
            from jsonschema import Draft202012Validator

            self._schema_validator = Draft202012Validator(spec.schema)

    def _check(self, row: TableRow, output: str | bytes | None) -> bool:
        values: dict[str, Any] | None = None
        problem = "the reply held no output"
        if output:
            values, problem = self._validate(output)
        if values is None:
            return self._invalid(row, problem)
        self._fill(row, values)
        return True

    def _check_model(self, row: TableRow, output: str | bytes | None) -> bool:
        """`check` for a Pydantic model, inlined: it runs once per result."""
        if not output:
            return self._invalid(row, "the reply held no output")
        try:
            instance = self._validate_json(output)
        except self._validation_error:
            return self._invalid(row, self._by_model(output)[1])
        self._fill(row, self._to_json_values(instance, mode="json", by_alias=True))
        return True

    def _fill(self, row: TableRow, values: dict[str, Any]) -> None:
        for name in self._json_columns:
            if (value := values.get(name)) is not None:
                values[name] = _encoder.encode(value).decode()
        for name in self.columns:
            setattr(row, name, values.get(name))

    @staticmethod
    def _invalid(row: TableRow, problem: str) -> bool:
        if row.stop_reason not in ("end_turn", "tool_use", None):
            problem = f"the reply stopped with stop_reason {row.stop_reason!r}: {problem}"
        row.error_type = INVALID_OUTPUT
        row.error_message = problem if len(problem) <= MESSAGE_CHARS else problem[: MESSAGE_CHARS - 1] + "…"
        return False

    def _by_model(self, output: str | bytes) -> tuple[dict[str, Any] | None, str]:
        try:
            instance = self._validate_json(output)
        except self._validation_error as exc:
            errors = exc.errors(include_url=False)
            shown = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors[:_ERRORS_SHOWN])
            more = f" (and {len(errors) - _ERRORS_SHOWN} more)" if len(errors) > _ERRORS_SHOWN else ""
            return None, f"{exc.title}: {len(errors)} validation error(s): {shown}{more}"
        values: dict[str, Any] = self._to_json_values(instance, mode="json", by_alias=True)
        return values, ""

    def _by_schema(self, output: str | bytes) -> tuple[dict[str, Any] | None, str]:
        from jsonschema.exceptions import best_match

        try:
            value = _decoder.decode(output)
        except msgspec.DecodeError as exc:
            return None, f"the output is not JSON: {exc}"
        error = best_match(self._schema_validator.iter_errors(value))
        if error is not None:
            return None, f"{self.spec.name}: {_where(error.absolute_path)}: {error.message}"
        if not isinstance(value, dict):
            return None, f"{self.spec.name}: the output is not an object"
        for name in self._integers:  # (JSON schema counts 2.0 as an integer; the column holds 2)
            if isinstance(number := value.get(name), float):
                value[name] = int(number)
        return value, ""


def _where(location: Any) -> str:
    return ".".join(str(part) for part in location) or "(the object)"
