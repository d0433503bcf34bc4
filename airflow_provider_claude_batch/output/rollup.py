"""One manifest over many partitions' manifests (the distributed path: one input split over mapped tasks,
each landing its own partition with its own `_manifest.json`).

`roll_up` is pure: requests, counts, usage and dollars are summed, lists (models, files) joined, and
each partition named with its path and its manifest's sha256, so the roll-up can be checked against
them. `write_rollup` reads the partitions' manifests and writes the roll-up beside them.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.sdk import ObjectStoragePath

ROLLUP_NAME = "_rollup_manifest.json"
_SUMMED = ("requests", "failed", "counts", "error_types", "usage_total", "cost")


def roll_up(partitions: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    """The roll-up of `(path, manifest bytes)` per partition, in the order given."""
    total: dict[str, Any] = {}
    listed = []
    for path, raw in partitions:
        manifest = json.loads(raw)
        for key in _SUMMED:
            if key in manifest:
                total[key] = _added(total.get(key), manifest[key])
        listed.append(
            {
                "path": path,
                "manifest_sha256": hashlib.sha256(raw).hexdigest(),
                "requests": manifest["requests"],
                "batch_ids": [b["id"] for b in manifest.get("batches", [])],
            }
        )
    requests = total.get("requests", 0)
    total["failed_fraction"] = round(total.get("failed", 0) / requests, 6) if requests else 0.0
    return {"partitions": listed, **total}


def write_rollup(
    output: str | ObjectStoragePath,
    partition_paths: Sequence[str | ObjectStoragePath],
    storage_conn_id: str | None = None,
) -> dict[str, Any]:
    """Read each partition's `_manifest.json`, write their roll-up as `output/_rollup_manifest.json`, return it."""
    from airflow_provider_claude_batch.storage import as_path

    partitions = []
    for place in partition_paths:
        folder = as_path(place, storage_conn_id)
        partitions.append((str(folder), (folder / "_manifest.json").read_bytes()))
    rolled = roll_up(partitions)
    output = as_path(output, storage_conn_id)
    output.mkdir(parents=True, exist_ok=True)
    (output / ROLLUP_NAME).write_bytes(json.dumps(rolled, indent=2, sort_keys=True).encode())
    return rolled


def _added(total: Any, more: Any) -> Any:
    """`total` and `more` added: numbers summed, mappings key by key, lists joined without repeats."""
    if total is None:
        return more
    if isinstance(more, bool) or isinstance(total, bool):
        return total and more
    if isinstance(more, int | float) and isinstance(total, int | float):
        return total + more
    if isinstance(more, dict) and isinstance(total, dict):
        return {key: _added(total.get(key), more.get(key)) for key in {**total, **more}}
    if isinstance(more, list) and isinstance(total, list):
        return [*total, *(item for item in more if item not in total)]
    return total if total == more else None
