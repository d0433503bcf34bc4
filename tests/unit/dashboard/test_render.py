"""The page and its JSON: every section, the chart drawn on the server, values escaped, nothing external."""

from __future__ import annotations

import json
import re

from airflow_provider_claude_batch.dashboard.model import (
    Listing,
    build_dashboard,
    landed_from_summary,
    submitted_from_record,
)
from airflow_provider_claude_batch.dashboard.render import batches_json, render_html, runs_json
from airflow_provider_claude_batch.submit.record import TaskKey
from tests.unit.dashboard.test_model import CONSOLE, DAY, NOW, listed, record, summary


def board(dag_id: str = "nightly", error: str | None = None):  # type: ignore[no-untyped-def]
    task = TaskKey(dag_id, "submit", "scheduled__2026-12-06")
    submitted = submitted_from_record(
        task, record(("msgbatch_run", 10, NOW - 3600), ("msgbatch_old", 4, NOW - 3 * DAY))
    )
    listing = Listing(
        "claude_batch_default",
        {"msgbatch_run": listed("msgbatch_run", "in_progress", NOW - 3600, processing=7, succeeded=3)},
        error,
    )
    run = landed_from_summary(TaskKey(dag_id, "land", "r"), summary(["msgbatch_done"], 0.75, 0.75), NOW - 3600)
    return build_dashboard(submitted, [run] if run else [], [listing], now=NOW, console_url=CONSOLE)


def test_the_page_shows_each_section_with_progress_the_at_risk_row_and_the_chart() -> None:
    page = render_html(board(), ui_root="http://airflow.example")
    assert (
        "<h3>In flight (1)</h3>" in page and "<h3>At risk (1)</h3>" in page and "<h3>Landed (last 1 runs)</h3>" in page
    )
    assert "msgbatch_run" in page and "3/10" in page and "expires in 23h00m" in page
    assert "<tr class='risk' data-batch='msgbatch_old'>" in page and "<td class='n'>26.0</td>" in page
    assert "href='http://airflow.example/dags/nightly/runs/scheduled__2026-12-06/tasks/submit' target='_top'" in page
    assert page.count("<svg") == 1 and page.count("<rect") == 60
    assert "0.7500" in page


def test_nothing_is_loaded_from_elsewhere_and_nothing_can_change_a_batch() -> None:
    page = render_html(board())
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert "<form" not in page and "method=" not in page


def test_values_are_escaped() -> None:
    page = render_html(board(dag_id="<script>alert(1)</script>"))
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_an_unreachable_api_is_said_on_the_page() -> None:
    page = render_html(board(error="no answer within 5 s"))
    assert "The API was unreachable (no answer within 5 s)" in page


def test_the_json_routes_carry_batches_and_runs() -> None:
    batches = json.loads(json.dumps(batches_json(board())))
    (conn,) = batches["connections"]
    assert [r["batch_id"] for r in conn["in_flight"]] == ["msgbatch_run"]
    assert [r["batch_id"] for r in conn["at_risk"]] == ["msgbatch_old"]
    assert conn["in_flight"][0]["task"]["url"] == "/dags/nightly/runs/scheduled__2026-12-06/tasks/submit"
    runs = json.loads(json.dumps(runs_json(board())))
    (conn,) = runs["connections"]
    assert conn["landed"][0]["batch_ids"] == ["msgbatch_done"] and len(conn["daily"]) == 30
