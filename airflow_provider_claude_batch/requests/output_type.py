"""The parse-time check of an `output_type` argument: cheap (no Pydantic, no schema work), so DAG files stay fast."""

from __future__ import annotations

from collections.abc import Mapping


def check_output_type(output_type: object) -> None:
    """Refuse, when a DAG is parsed, an `output_type` that is neither a Pydantic model class nor a schema dict."""
    if output_type is None or isinstance(output_type, Mapping):
        return
    if isinstance(output_type, type) and callable(getattr(output_type, "model_json_schema", None)):
        return
    raise TypeError(
        "output_type takes a Pydantic model class (class Answer(BaseModel): ...) or a JSON schema dict, "
        f"not {output_type!r}"
    )
