"""The Claude Batches view at scale: 1,000 tracked batches and 365 days of landed runs.

What one refresh of the page does, each step timed: read the XCom rows (1,000 submission records and
3 landings a day for a year, beside three other tasks' return values in every run, in a migrated
SQLite metadata DB; the view reads only the last 30 days and only our tasks' rows),
one List call of 1,000 batches to the emulator (over loopback, in this process's threads), then
sort into sections, build the chart and render the HTML. Run: `.venv/bin/python -m bench.ui`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

TRACKED = 1000
DAYS = 365
RUNS_PER_DAY = 3
OTHER_TASKS = ("extract", "transform", "score")
DAY = 86400.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], check=True, capture_output=True)

    from airflow_provider_claude_batch.emulator import EmulatorConfig, EmulatorServer

    with EmulatorServer(EmulatorConfig(processing_seconds=0.0)) as emulator:
        now = time.time()
        ids = create_batches(emulator)
        seed_metadata_db(ids, now)
        os.environ["AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT"] = json.dumps(
            {"conn_type": "claude_batch", "host": emulator.url, "password": emulator.api_key}
        )
        timings = [refresh() for _ in range(args.repeat)]
    steps = {name: [t[name] for t in timings] for name in timings[0]}
    print(
        f"Claude Batches view, {TRACKED:,} tracked batches, {DAYS} days x {RUNS_PER_DAY} landed runs "
        f"(min / median of {args.repeat}, ms):"
    )
    for name, values in steps.items():
        print(f"  {name:<32} {min(values) * 1000:8.1f} / {statistics.median(values) * 1000:8.1f}")
    return 0


def create_batches(emulator: object) -> list[str]:
    """1,000 batches on the emulator: 700 ended (landed or not), 300 still processing."""
    import anthropic

    client = anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0)  # type: ignore[attr-defined]
    request = [
        {
            "custom_id": "a",
            "params": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
        }
    ]
    ids = []
    for i in range(TRACKED):
        if i == 700:
            emulator.control.configure(processing_seconds=3600)  # type: ignore[attr-defined]
        ids.append(client.messages.batches.create(requests=request).id)  # type: ignore[arg-type]
    return ids


def seed_metadata_db(ids: list[str], now: float) -> None:
    """XCom rows as our tasks write them (a submission record per batch, a landing summary and its batch
    IDs 3 times a day), beside the return values of three other tasks in every run."""
    import datetime as dt

    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import text

    def when(epoch: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch, dt.UTC)

    with create_session() as session:
        session.execute(text("PRAGMA foreign_keys=OFF"))  # no task instance rows: the view never reads them
        session.add(DagBundleModel(name="dags-folder"))
        session.add(DagModel(dag_id="bench_view", bundle_name="dags-folder", fileloc="/bench.py"))
        session.flush()
        runs = []
        total = max(TRACKED, DAYS * RUNS_PER_DAY)
        for i in range(total):
            at = now - DAYS * DAY + (i + 1) * DAYS * DAY / total
            run = DagRun(
                dag_id="bench_view", run_id=f"run-{i:05d}", run_type="manual", logical_date=when(at), run_after=when(at)
            )
            session.add(run)
            runs.append((run, at))
        session.flush()
        for run, at in runs:  # other tasks' return values, which the view must not read
            for task_id in OTHER_TASKS:
                session.add(
                    XComModel(
                        dag_run_id=run.id,
                        task_id=task_id,
                        map_index=-1,
                        key="return_value",
                        dag_id="bench_view",
                        run_id=run.run_id,
                        value=json.dumps({"rows": list(range(200))}),
                        timestamp=when(at),
                    )
                )
        for i, batch_id in enumerate(ids):
            run, at = runs[-(i + 1)]
            created = now - (i % 28) * DAY - 3600 if i < 700 else now - 600
            record = {
                "version": 1,
                "key": {},
                "fingerprint": "f",
                "created_at": created,
                "updated_at": created,
                "parts": [{"index": 0, "request_count": 1, "batch_id": batch_id, "created_at": created}],
            }
            session.add(
                XComModel(
                    dag_run_id=run.id,
                    task_id="submit",
                    map_index=-1,
                    key="submission_record",
                    dag_id="bench_view",
                    run_id=run.run_id,
                    value=json.dumps(record),
                    timestamp=when(created),
                )
            )
        landed = iter(ids[:700:2])
        for run, at in runs[-DAYS * RUNS_PER_DAY :]:
            summary = {
                "output_path": "s3://out/",
                "requests": 1,
                "counts": {"succeeded": 1},
                "failed": 0,
                "usage_total": {"input_tokens": 100, "output_tokens": 10},
                "cost": {"batch_usd": 0.5, "standard_usd": 1.0, "savings_usd": 0.5},
                "batch_ids": [next(landed, f"msgbatch_old_{uuid.uuid4().hex}")],
            }
            for key, value in (("return_value", summary), ("batch_ids", summary["batch_ids"])):
                session.add(
                    XComModel(
                        dag_run_id=run.id,
                        task_id="land",
                        map_index=-1,
                        key=key,
                        dag_id="bench_view",
                        run_id=run.run_id,
                        value=json.dumps(value),
                        timestamp=when(at),
                    )
                )


def refresh() -> dict[str, float]:
    """One page refresh, step by step (the List cache is new each time: the API is called every time)."""
    from airflow_provider_claude_batch.dashboard.model import build_dashboard
    from airflow_provider_claude_batch.dashboard.render import render_html
    from airflow_provider_claude_batch.dashboard.sources import ListingCache, read_tracked

    t0 = time.perf_counter()
    now = time.time()
    submitted, landed = read_tracked({"bench_view"}, now)
    t1 = time.perf_counter()
    listings = ListingCache(timeout=10).listings(["claude_batch_default"])
    t2 = time.perf_counter()
    board = build_dashboard(submitted, landed, listings, now=now, console_url="https://console/{batch_id}")
    page = render_html(board)
    t3 = time.perf_counter()
    if listings[0].error or len(listings[0].batches) != TRACKED or len(submitted) < TRACKED:
        raise RuntimeError(f"unexpected refresh: {listings[0].error}, {len(submitted)} records")
    return {
        f"read XCom ({len(submitted) + len(landed)} rows)": t1 - t0,
        "List call (1,000 batches)": t2 - t1,
        f"sections + render ({len(page) // 1024} KB)": t3 - t2,
        "whole refresh": t3 - t0,
    }


if __name__ == "__main__":
    sys.exit(main())
