"""What landing tells Airflow beyond XCom: the output as an asset, and OpenLineage facets."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.openlineage.facet import Dataset, RunFacet
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Asset, AssetAlias, Context, ObjectStoragePath

# What a landing task landed: (output location, batch IDs), for OpenLineage.
Landed = tuple[str, list[str]]
# The facets a landing task reports: datasets in and out, no run facets.
Lineage: TypeAlias = "OperatorLineage[Dataset, RunFacet]"


def openlineage_facets(landed: Landed | None) -> Lineage:
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


def output_asset(output_path: object, task_id: str) -> Asset | AssetAlias:
    """A fixed output path is an Asset; a templated one is announced through an AssetAlias at run time."""
    from airflow.sdk import Asset, AssetAlias

    text = str(output_path)
    if "{{" in text or "{%" in text:
        return AssetAlias(name=f"claude_batch_results__{task_id}")
    return Asset(uri=asset_uri(text))


def asset_uri(location: str) -> str:
    """A URI for an output location: object-store URIs as they are, local paths as file:// URIs."""
    uri = location if "://" in location else "file://" + os.path.abspath(location)
    return uri.rstrip("/")


def emit_asset_event(context: Context, outlets: Sequence[object], output: ObjectStoragePath) -> None:
    """Announce the rendered output location on each AssetAlias outlet."""
    from airflow.sdk import Asset, AssetAlias

    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            context["outlet_events"][outlet].add(Asset(uri=asset_uri(str(output))))
