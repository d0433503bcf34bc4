"""The roll-up of partitions' manifests: summed figures, joined lists, and each partition's sha256."""

from __future__ import annotations

import hashlib
import json

from airflow_provider_claude_batch.output.rollup import roll_up


def _manifest(requests: int, failed: int, usd: float, models: list[str]) -> bytes:
    return json.dumps(
        {
            "requests": requests,
            "failed": failed,
            "counts": {"succeeded": requests - failed, **({"errored": failed} if failed else {})},
            "usage_total": {"input_tokens": 10 * requests, "output_tokens": requests},
            "cost": {"batch_usd": usd, "standard_usd": 2 * usd, "unpriced_models": models},
            "batches": [{"id": f"b{requests}"}],
            "landed_at": "2026-12-07T00:00:00Z",
        }
    ).encode()


def test_partitions_are_summed_and_each_named_with_its_manifest_hash() -> None:
    one, two = _manifest(20, 0, 0.5, []), _manifest(30, 3, 0.25, ["claude-x"])
    rolled = roll_up([("s3://b/p0", one), ("s3://b/p1", two)])
    assert rolled["requests"] == 50 and rolled["failed"] == 3 and rolled["failed_fraction"] == 0.06
    assert rolled["counts"] == {"succeeded": 47, "errored": 3}
    assert rolled["usage_total"] == {"input_tokens": 500, "output_tokens": 50}
    assert rolled["cost"] == {"batch_usd": 0.75, "standard_usd": 1.5, "unpriced_models": ["claude-x"]}
    assert [p["manifest_sha256"] for p in rolled["partitions"]] == [
        hashlib.sha256(one).hexdigest(),
        hashlib.sha256(two).hexdigest(),
    ]
    assert rolled["partitions"][1] == {
        "path": "s3://b/p1",
        "manifest_sha256": hashlib.sha256(two).hexdigest(),
        "requests": 30,
        "batch_ids": ["b30"],
    }
    assert "landed_at" not in rolled  # only what adds up is rolled up


def test_no_partitions_roll_up_to_nothing() -> None:
    assert roll_up([]) == {"partitions": [], "failed_fraction": 0.0}
