"""Read a landed table back as validated model instances, one row at a time (for a downstream task).

`read_validated` takes the output folder (or its `_manifest.json`, or the manifest's summary from
XCom), checks that the table was landed for the same schema (the manifest's digest), and yields one
instance per row whose output validated; failure rows are passed over (they are in failures.jsonl).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import ObjectStoragePath

T = TypeVar("T")


@overload
def read_validated(
    landed: str | ObjectStoragePath | Mapping[str, Any], output_type: type[T], *, storage_conn_id: str | None = None
) -> Iterator[T]: ...


@overload
def read_validated(
    landed: str | ObjectStoragePath | Mapping[str, Any],
    output_type: Mapping[str, Any],
    *,
    storage_conn_id: str | None = None,
) -> Iterator[dict[str, Any]]: ...


def read_validated(
    landed: str | ObjectStoragePath | Mapping[str, Any],
    output_type: type[Any] | Mapping[str, Any],
    *,
    storage_conn_id: str | None = None,
) -> Iterator[Any]:
    """The landed rows that validated, as `output_type` instances (a dict each for a JSON schema dict).

    `landed`: the output path, a manifest, or the results operator's summary (``output_path`` in it).
    Streams ``results.jsonl``; refuses a table landed for another schema (the digests differ).
    """
    from airflow_provider_claude_batch.exceptions import BatchInputError
    from airflow_provider_claude_batch.output.landing import spec_of
    from airflow_provider_claude_batch.output.rounds import read_rows
    from airflow_provider_claude_batch.storage import as_path, read_bytes_if_exists

    spec = spec_of(output_type)
    if spec is None:
        raise BatchInputError("read_validated needs the output_type the results were landed with")
    folder_name = landed["output_path"] if isinstance(landed, Mapping) else landed
    folder = as_path(folder_name, storage_conn_id)
    raw = read_bytes_if_exists(folder / "_manifest.json")
    if raw is None:
        raise BatchInputError(f"No _manifest.json under {folder}: the results were not landed (yet)")
    recorded = msgspec.json.decode(raw).get("structured_output") or {}
    if recorded.get("schema_sha256") != spec.digest:
        raise BatchInputError(
            f"The table under {folder} was landed for {recorded.get('name') or 'no output_type'} "
            f"(schema sha256 {recorded.get('schema_sha256')}), not for {spec.name} ({spec.digest})"
        )
    columns = tuple(recorded["columns"])
    json_columns = {name for name, kind in recorded["columns"].items() if kind == "json"}
    decode = msgspec.json.Decoder().decode
    for row in read_rows(folder / "results.jsonl"):
        if row["result_type"] != "succeeded" or row.get("error_type") is not None:
            continue
        values = {name: row.get(name) for name in columns}
        for name in json_columns:
            if isinstance(text := values[name], str):
                values[name] = decode(text)
        if spec.model is None:  # a property the output left out is not a null
            yield {name: value for name, value in values.items() if value is not None}
        else:
            yield spec.model.model_validate(values)  # type: ignore[attr-defined]
