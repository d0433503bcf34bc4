"""The view as HTML (one page, inline CSS, a server-drawn SVG chart: nothing loaded from elsewhere)
and as JSON. Pure: a `Dashboard` in, text or plain values out; every value shown is escaped.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from html import escape
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.dashboard.model import task_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_provider_claude_batch.dashboard.model import (
        AtRisk,
        ConnectionView,
        Dashboard,
        Day,
        InFlight,
        Landed,
    )
    from airflow_provider_claude_batch.submit.record import TaskKey

CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 720, 180, 28

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2328;background:#fff}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:1.6rem 0 .4rem;border-bottom:1px solid #d0d7de}
h3{font-size:1rem;margin:1rem 0 .3rem}.muted{color:#656d76;font-size:.85rem}
table{border-collapse:collapse;font-size:.85rem;margin:.3rem 0}th,td{padding:.25rem .6rem;text-align:left;
border-bottom:1px solid #eaeef2}th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:80px;height:8px;background:#eaeef2;vertical-align:middle;margin-right:.3rem}
.bar i{display:block;height:100%;background:#2da44e}
.warn{background:#fff8c5;padding:.4rem .6rem;border:1px solid #d4a72c}
.risk td{background:#fff1f0}code{font-size:.8rem}svg text{font-size:10px;fill:#656d76}
"""


def render_html(board: Dashboard, *, ui_root: str = "") -> str:
    """The page: per connection, in flight, landed (with the 30-day chart) and at risk."""
    generated = _when(board.generated_at)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Claude Batches</title>",
        f"<style>{_STYLE}</style></head><body><h1>Claude Batches</h1>",
        f"<p class='muted'>As of {generated} UTC. Batches created by tasks of DAGs you may read; "
        "read-only (nothing here creates, cancels or deletes a batch).</p>",
    ]
    if not board.connections:
        parts.append("<p>No Claude connection and no batch created by a DAG you may read.</p>")
    for view in board.connections:
        parts.append(_connection(view, ui_root))
    parts.append("</body></html>")
    return "".join(parts)


def _connection(view: ConnectionView, ui_root: str) -> str:
    title = escape(view.conn_id) if view.conn_id else "Batches no connection's listing holds"
    out = [f"<section data-conn='{escape(view.conn_id)}'><h2>{title}</h2>"]
    if view.api_error:
        out.append(
            f"<p class='warn' role='status'>The API was unreachable ({escape(view.api_error)}): "
            "statuses below come from our records only.</p>"
        )
    out.append(f"<h3>In flight ({len(view.in_flight)})</h3>")
    out.append(_in_flight(view.in_flight, ui_root) if view.in_flight else "<p class='muted'>None.</p>")
    out.append(f"<h3>At risk ({len(view.at_risk)})</h3>")
    out.append(_at_risk(view.at_risk, ui_root) if view.at_risk else "<p class='muted'>None.</p>")
    out.append(f"<h3>Landed (last {len(view.landed)} runs)</h3>")
    out.append(_chart(view.daily))
    out.append(_landed(view.landed, ui_root) if view.landed else "<p class='muted'>None.</p>")
    out.append("</section>")
    return "".join(out)


def _task_cells(task: TaskKey, ui_root: str) -> str:
    # Links open in the whole window: inside Airflow's UI the view is in a frame.
    label = task.task_id if task.map_index < 0 else f"{task.task_id}[{task.map_index}]"
    return (
        f"<td>{escape(task.dag_id)}</td><td>{escape(task.run_id)}</td>"
        f"<td><a href='{escape(ui_root + task_url(task))}' target='_top'>{escape(label)}</a></td>"
    )


def _batch_cell(batch_id: str, console_url: str) -> str:
    link = f"<a href='{escape(console_url)}' target='_blank' rel='noreferrer'>Console</a>"
    return f"<td><code>{escape(batch_id)}</code> {link}</td>"


def _in_flight(rows: Sequence[InFlight], ui_root: str) -> str:
    head = "<th>DAG</th><th>Run</th><th>Task</th><th>Batch</th><th>Age</th><th>Progress</th><th>Status</th>"
    body = []
    for r in rows:
        share = r.done / r.requests if r.requests else 0.0
        body.append(
            f"<tr data-batch='{escape(r.batch_id)}'>{_task_cells(r.task, ui_root)}"
            f"{_batch_cell(r.batch_id, r.console_url)}"
            f"<td class='n'>{_duration(r.age_seconds)}</td>"
            f"<td><span class='bar'><i style='width:{share * 100:.0f}%'></i></span>{r.done}/{r.requests}</td>"
            f"<td>{escape(r.status)}; expires in {_duration(max(0.0, r.expires_in_seconds))}</td></tr>"
        )
    return f"<table class='in-flight'><tr>{head}</tr>{''.join(body)}</table>"


def _at_risk(rows: Sequence[AtRisk], ui_root: str) -> str:
    head = "<th>DAG</th><th>Run</th><th>Task</th><th>Batch</th><th>Requests</th><th>Status</th><th>Days left</th>"
    body = [
        f"<tr class='risk' data-batch='{escape(r.batch_id)}'>{_task_cells(r.task, ui_root)}"
        f"{_batch_cell(r.batch_id, r.console_url)}<td class='n'>{r.requests}</td><td>{escape(r.status)}</td>"
        f"<td class='n'>{r.days_left:.1f}</td></tr>"
        for r in rows
    ]
    return f"<table class='at-risk'><tr>{head}</tr>{''.join(body)}</table>"


def _landed(rows: Sequence[Landed], ui_root: str) -> str:
    head = (
        "<th>DAG</th><th>Run</th><th>Task</th><th>Landed</th><th>Requests</th><th>Failed</th><th>Tokens in/out</th>"
        "<th>Cache read/write</th><th>Via Messages API</th><th>Batch $</th><th>Paid $</th><th>Standard $</th>"
        "<th>Saved $</th>"
    )
    body = [
        f"<tr>{_task_cells(r.task, ui_root)}<td>{_when(r.landed_at)}</td><td class='n'>{r.requests}</td>"
        f"<td class='n'>{r.failed}</td><td class='n'>{r.input_tokens:,}/{r.output_tokens:,}</td>"
        f"<td class='n'>{r.cache_read_tokens:,}/{r.cache_write_tokens:,}</td><td class='n'>{r.sync_requests}</td>"
        f"<td class='n'>{r.batch_usd:.4f}</td><td class='n'>{r.paid_usd:.4f}</td>"
        f"<td class='n'>{r.standard_usd:.4f}</td><td class='n'>{r.savings_usd:.4f}</td></tr>"
        for r in rows
    ]
    return f"<table class='landed'><tr>{head}</tr>{''.join(body)}</table>"


def _chart(days: Sequence[Day]) -> str:
    """Bars of daily spend (batch price) with the day's savings stacked on top, as inline SVG."""
    if not days:
        return ""
    top = max((d.paid_usd + d.savings_usd for d in days), default=0.0) or 1.0
    inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
    step = inner_w / len(days)
    bars = []
    for i, d in enumerate(days):
        x = CHART_PAD + i * step
        spent_h = inner_h * d.paid_usd / top
        saved_h = inner_h * d.savings_usd / top
        base = CHART_PAD + inner_h
        tip = f"{d.day}: ${d.paid_usd:.4f} spent, ${d.savings_usd:.4f} saved"
        bars.append(
            f"<g><title>{escape(tip)}</title>"
            f"<rect x='{x:.1f}' y='{base - spent_h:.1f}' width='{step * 0.8:.1f}' "
            f"height='{spent_h:.1f}' fill='#0969da'/>"
            f"<rect x='{x:.1f}' y='{base - spent_h - saved_h:.1f}' width='{step * 0.8:.1f}' "
            f"height='{saved_h:.1f}' fill='#2da44e'/></g>"
        )
    labels = (
        f"<text x='{CHART_PAD}' y='{CHART_HEIGHT - 8}'>{escape(days[0].day)}</text>"
        f"<text x='{CHART_WIDTH - CHART_PAD}' y='{CHART_HEIGHT - 8}' text-anchor='end'>{escape(days[-1].day)}</text>"
        f"<text x='{CHART_PAD}' y='{CHART_PAD - 8}'>top of the scale ${top:.4g} a day; blue: paid at batch price, "
        "green: saved against standard price</text>"
    )
    return (
        f"<svg class='chart' role='img' aria-label='Daily spend and savings, last {len(days)} days' "
        f"width='{CHART_WIDTH}' height='{CHART_HEIGHT}' viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' "
        f"xmlns='http://www.w3.org/2000/svg'>{labels}{''.join(bars)}</svg>"
    )


def batches_json(board: Dashboard) -> dict[str, Any]:
    """`/api/batches`: per connection, the batches in flight and at risk."""
    return _per_connection(board, "in_flight", "at_risk")


def runs_json(board: Dashboard) -> dict[str, Any]:
    """`/api/runs`: per connection, the recent landings and the daily spend and savings."""
    return _per_connection(board, "landed", "daily")


def _per_connection(board: Dashboard, *sections: str) -> dict[str, Any]:
    views = [
        {"conn_id": v.conn_id, "api_error": v.api_error, **{s: [_plain(r) for r in getattr(v, s)] for s in sections}}
        for v in board.connections
    ]
    return {"generated_at": board.generated_at, "connections": views}


def _plain(row: Any) -> dict[str, Any]:
    value: dict[str, Any] = dataclasses.asdict(row)
    task = getattr(row, "task", None)
    if task is not None:
        value["task"]["url"] = task_url(task)
    return value


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"
