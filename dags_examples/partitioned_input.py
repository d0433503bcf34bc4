"""A very large input over many workers: split into partitions, each one submit/wait/land (mapped tasks).

Use it when one input is too large for one task to wait on comfortably (millions of rows), or when you
want its partitions landed on several workers at once. `split_input` cuts the rows into files of
PARTITION_ROWS rows; `classify_partition` is mapped over them with `.expand`, each partition a
`ClaudeBatchOperator` landing its own folder with its own manifest (a retry or clear of one partition
re-attaches to its own batches); `roll_up` writes `_rollup_manifest.json` over all of them: summed
requests, counts, tokens and dollars, and each partition's manifest sha256.

All partitions share one queue limit through an Airflow pool sized in requests: create it once with
the workspace tier's queue limit and count deferred tasks in it, e.g.
`airflow pools set claude_batch_queue 100000 "Claude batch queue, in requests" --include-deferred`.
Each partition takes `pool_slots=PARTITION_ROWS`, so no more partitions submit and wait at once than
the queue holds; the rest wait in the scheduler, holding no worker slot.
"""

from __future__ import annotations

import json
import os

import pendulum
from _common import CLASSIFY_PARAMS, DATA, DEFAULT_ARGS, MODEL, OUTPUT_ROOT, POLL_SECONDS, STORAGE_CONN
from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator

PARTITION_ROWS = int(os.environ.get("CLAUDE_BATCH_EXAMPLES_PARTITION_ROWS", "20"))
POOL = os.environ.get("CLAUDE_BATCH_EXAMPLES_POOL", "claude_batch_queue")
PARTITIONS_ROOT = OUTPUT_ROOT + "/partitioned_input/{{ ds }}"


@task
def split_input(source: str, root: str, rows_per_partition: int) -> list[str]:
    """The input's rows in files of `rows_per_partition` rows (streamed: one partition in memory at most)."""
    folder = ObjectStoragePath(root, conn_id=STORAGE_CONN) / "input"
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    part: list[bytes] = []

    def flush() -> None:
        path = folder / f"part-{len(paths):05d}.jsonl"
        path.write_bytes(b"".join(part))
        paths.append(str(path))
        part.clear()

    with open(source, "rb") as rows:  # in production: an ObjectStoragePath's open("rb")
        for line in rows:
            if line.strip():
                part.append(line if line.endswith(b"\n") else line + b"\n")
                if len(part) == rows_per_partition:
                    flush()
    if part:
        flush()
    return paths


@task
def roll_up(summaries: list[dict[str, object]], root: str) -> dict[str, object]:
    """One manifest over every partition's (`_rollup_manifest.json` under the run's folder)."""
    from airflow_provider_claude_batch.output.rollup import write_rollup

    rolled = write_rollup(root, [str(s["output_path"]) for s in summaries], STORAGE_CONN)
    print(json.dumps({k: rolled[k] for k in ("requests", "counts", "failed")}))
    return {"requests": rolled["requests"], "partitions": len(rolled["partitions"])}


with DAG(
    "claude_batch_partitioned_input",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["claude-batch", "example"],
    doc_md=__doc__,
) as dag:
    parts = split_input(str(DATA / "reviews.jsonl"), PARTITIONS_ROOT, PARTITION_ROWS)
    classified = ClaudeBatchOperator.partial(
        task_id="classify_partition",
        custom_id_column="id",
        params_template=CLASSIFY_PARAMS,
        model=MODEL,
        max_tokens=5,
        output_path=PARTITIONS_ROOT + "/part-{{ ti.map_index }}/",
        storage_conn_id=STORAGE_CONN,
        deferrable=True,
        poll_interval=POLL_SECONDS,
        pool=POOL,
        pool_slots=PARTITION_ROWS,
    ).expand(rows_path=parts)
    roll_up(classified.output, PARTITIONS_ROOT)
