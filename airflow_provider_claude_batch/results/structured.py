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
from msgspec.structs import astuple

from airflow_provider_claude_batch.requests.structured import resolve
from airflow_provider_claude_batch.results.fold import INVALID_OUTPUT, TableRow

if TYPE_CHECKING:
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
        self._integers = tuple(name for name, kind in self.kinds.items() if kind == "integer")
        # A TableRow subclass: the table's columns, then the output's.
        self.row_type: type[TableRow] = msgspec.defstruct(  # type: ignore[assignment]
            f"{spec.tool_name}Row", [(name, Any, None) for name in self.columns], bases=(TableRow,), gc=False
        )
        self._validate = self._by_model if spec.model is not None else self._by_schema
        if spec.model is None:
            from jsonschema import Draft202012Validator

            self._schema_validator = Draft202012Validator(spec.schema)

    def typed(self, row: TableRow) -> TableRow:
        """`row` as a row of this landing's table (its typed columns empty): a failed or errored result."""
        return self.row_type(*astuple(row))

    def check(self, row: TableRow, output: str | bytes | None) -> tuple[TableRow, bool]:
        """A succeeded row with its output's columns and True, or its invalid_output failure row and False."""
        values: dict[str, Any] | None = None
        problem = "the reply held no output"
        if output is not None and output != "":
            values, problem = self._validate(output)
        if values is not None:
            return self.row_type(*astuple(row), *(_cell(values.get(c)) for c in self.columns)), True
        if row.stop_reason not in ("end_turn", "tool_use", None):
            problem = f"the reply stopped with stop_reason {row.stop_reason!r}: {problem}"
        failed = self.row_type(*astuple(row))
        failed.error_type = INVALID_OUTPUT
        failed.error_message = problem if len(problem) <= MESSAGE_CHARS else problem[: MESSAGE_CHARS - 1] + "…"
        return failed, False

    def _by_model(self, output: str | bytes) -> tuple[dict[str, Any] | None, str]:
        from pydantic import ValidationError

        model: Any = self.spec.model
        try:
            instance = model.model_validate_json(output)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            shown = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors[:_ERRORS_SHOWN])
            more = f" (and {len(errors) - _ERRORS_SHOWN} more)" if len(errors) > _ERRORS_SHOWN else ""
            return None, f"{exc.title}: {len(errors)} validation error(s): {shown}{more}"
        values: dict[str, Any] = instance.model_dump(mode="json", by_alias=True)
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


def _cell(value: object) -> object:
    """A column's value: scalars as they are, objects and arrays as JSON text."""
    if isinstance(value, dict | list):
        return _encoder.encode(value).decode()
    return value


def _where(location: Any) -> str:
    return ".".join(str(part) for part in location) or "(the object)"
