"""Structured output on the request side: the schema an `output_type` stands for, and the params that ask for it.

Pure (no network, no files). A Pydantic model or a JSON schema dict becomes an `OutputSpec`: the
schema results are validated against, the strict form of it the API is sent, and the digest that
the manifest records. `with_output` adds the request of that schema to every request, in one of two
forms: the API's native structured outputs (``output_config.format``), or one forced tool whose
input is the object (for models the Models API does not report the capability for). Requests that
already ask for tools or an output format of their own are refused, line by line, before any spend.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from airflow_provider_claude_batch.requests.output_type import check_output_type
from airflow_provider_claude_batch.requests.prepare import Problem
from airflow_provider_claude_batch.results.fold import TABLE_COLUMNS

Form = Literal["native", "tool"]
# Keywords the API's strict schemas take (the rest go into the description, as the SDK's transform does).
_STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_KEPT = frozenset({"type", "enum", "const", "anyOf", "oneOf", "allOf", "description", "title", "$ref", "$defs"})
_TOOL_NAME = re.compile(r"[^a-zA-Z0-9_-]")
# Top-level fields of the output that would shadow a column of the landed table.
RESERVED_COLUMNS = frozenset({*TABLE_COLUMNS, "round", "attempts"})
_canonical = msgspec.json.Encoder(order="sorted")


@dataclass(frozen=True)
class OutputSpec:
    """What an `output_type` asks for: its name, the schema results must match, and what the API is sent.

    `schema` is the model's own JSON schema (every constraint kept: it is what results are validated
    against and what the manifest records); `request_schema` is its strict form (objects closed with
    ``additionalProperties: false``, keywords the API does not take moved into descriptions).
    """

    name: str
    schema: dict[str, Any]
    request_schema: dict[str, Any]
    model: type | None = None  # the Pydantic model, when one was given

    @property
    def digest(self) -> str:
        """sha256 of the schema's canonical JSON (sorted keys, no spaces): the manifest's record of it."""
        return hashlib.sha256(canonical_json(self.schema)).hexdigest()

    @property
    def tool_name(self) -> str:
        """The forced tool's name (the API takes letters, digits, '_' and '-', at most 64)."""
        return (_TOOL_NAME.sub("_", self.name) or "output")[:64]

    @property
    def fields(self) -> dict[str, dict[str, Any]]:
        """The top-level properties, in order: one landed column each."""
        return dict(resolve(self.schema, self.schema).get("properties", {}))

    def additions(self, form: Form) -> dict[str, Any]:
        """The params that ask for this output in `form`."""
        if form == "native":
            return {"output_config": {"format": {"type": "json_schema", "schema": self.request_schema}}}
        tool = {
            "name": self.tool_name,
            "description": f"Record the answer as a {self.name} object (the only way to answer).",
            "input_schema": self.request_schema,
        }
        return {"tools": [tool], "tool_choice": {"type": "tool", "name": self.tool_name}}


def output_spec(output_type: object) -> OutputSpec:
    """The spec of a Pydantic model class or a JSON schema dict; ValueError says what is wrong with a schema."""
    check_output_type(output_type)
    if isinstance(output_type, Mapping):
        schema = dict(output_type)
        _check_schema(schema)
        model = None
        name = str(schema.get("title") or "output")
    else:
        model = output_type
        schema = getattr(output_type, "model_json_schema")()  # noqa: B009  (checked by check_output_type)
        name = getattr(output_type, "__name__", "output")
    root = resolve(schema, schema)
    if root.get("type") != "object" or not isinstance(root.get("properties"), Mapping):
        raise ValueError(f"output_type {name}'s schema must describe an object with properties (one column each)")
    clashes = sorted(RESERVED_COLUMNS.intersection(root["properties"]))
    if clashes:
        raise ValueError(
            f"output_type {name} has field(s) {clashes} named like the landed table's own columns; "
            "rename them (a Pydantic alias works) so each gets its own column"
        )
    return OutputSpec(name, schema, strict_schema(schema), model if isinstance(model, type) else None)


def _check_schema(schema: Mapping[str, Any]) -> None:
    """A dict output_type is a JSON schema (Draft 2020-12); jsonschema's own check names what is wrong."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        msgspec.json.encode(schema)
        Draft202012Validator.check_schema(schema)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"output_type's schema is not JSON: {exc}") from None
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the top level"
        raise ValueError(f"output_type is not a valid JSON schema (at {where}): {exc.message}") from None


def canonical_json(schema: Mapping[str, Any]) -> bytes:
    """A schema's one spelling: keys sorted, no spaces (the same schema always has the same digest)."""
    return _canonical.encode(schema)


def resolve(node: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """`node`, or what its local ``$ref`` (``#/$defs/Name``) points at in `root` (with `node`'s other keys)."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return {**target, **{key: value for key, value in node.items() if key != "$ref"}}
    return dict(node)


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The API's strict form of `schema`: every object closed, unsupported keywords kept as description text."""
    strict: dict[str, Any] = {}
    rest = dict(schema)
    if isinstance(defs := rest.pop("$defs", None), Mapping):
        strict["$defs"] = {name: strict_schema(sub) for name, sub in defs.items()}
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(variants := rest.pop(key, None), list):
            strict["anyOf" if key == "oneOf" else key] = [strict_schema(v) for v in variants]
    kind = rest.get("type")
    if kind == "object" or "properties" in rest:
        strict["properties"] = {k: strict_schema(v) for k, v in rest.pop("properties", {}).items()}
        rest.pop("additionalProperties", None)
        strict["additionalProperties"] = False
        if "required" in rest:
            strict["required"] = list(rest.pop("required"))
    elif kind == "array":
        if isinstance(items := rest.pop("items", None), Mapping):
            strict["items"] = strict_schema(items)
        if rest.get("minItems") in (0, 1):
            strict["minItems"] = rest.pop("minItems")
    elif kind == "string" and rest.get("format") in _STRING_FORMATS:
        strict["format"] = rest.pop("format")
    rest.pop("default", None)  # (a default is the model's business, not the output's)
    for key in [k for k in rest if k in _KEPT]:
        strict[key] = rest.pop(key)
    if rest:  # e.g. minimum, maxLength, pattern: said in words, checked when the results are validated
        said = ", ".join(f"{key}: {value}" for key, value in rest.items())
        strict["description"] = f"{strict['description']}\n\n{{{said}}}" if "description" in strict else f"{{{said}}}"
    return strict


def conflicts(params: Mapping[str, Any], form: Form) -> str | None:
    """Why a request cannot also ask for the output (it sets its own tools or format), or None."""
    own = [name for name in ("tools", "tool_choice") if params.get(name) is not None]
    config = params.get("output_config")
    if isinstance(config, Mapping) and config.get("format") is not None:
        own.append("output_config.format")
    if own:
        return (
            f"sets {', '.join(own)}, and output_type asks for the output itself; drop "
            f"{'it' if len(own) == 1 else 'them'} from the request or leave output_type out"
        )
    thinking = params.get("thinking")
    if form == "tool" and isinstance(thinking, Mapping) and thinking.get("type") not in (None, "disabled"):
        return (
            "enables thinking, and its model is asked for the output through a forced tool, which the API "
            "refuses with thinking; disable thinking or pick a model with native structured outputs"
        )
    return None


def with_output(
    entries: Iterable[tuple[int, object]],
    spec: OutputSpec,
    default_model: str | None,
    form_for: Callable[[str], Form],
) -> Iterator[tuple[int, object]]:
    """Each `(line, request)` with the params that ask for `spec`'s output (in its model's form), or its Problem.

    A request's other ``output_config`` settings (e.g. ``effort``) are kept: ``format`` is added to
    them. Anything the schema would refuse anyway (no params, no model) passes through unchanged.
    """
    for line, entry in entries:
        params = entry.get("params") if isinstance(entry, Mapping) else None
        model = params.get("model", default_model) if isinstance(params, Mapping) else None
        if not isinstance(params, Mapping) or not isinstance(model, str) or not model:
            yield line, entry
            continue
        form = form_for(model)
        reason = conflicts(params, form)
        if reason is not None:
            custom_id = entry.get("custom_id") if isinstance(entry, Mapping) else None
            yield line, Problem(line, custom_id if isinstance(custom_id, str) else None, reason)
            continue
        added = spec.additions(form)
        if form == "native" and isinstance(config := params.get("output_config"), Mapping):
            added = {"output_config": {**config, **added["output_config"]}}
        yield line, {**entry, "params": {**params, **added}}  # type: ignore[dict-item]
