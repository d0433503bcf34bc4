"""The one manifest builder: what was landed (batches, rows, usage, cost, files) in, `_manifest.json` out.

Pure. A single landing and the fold of resubmission rounds each sum up their rows in a `Summary`,
and `build_manifest` writes the same fields from it for both (a folded landing adds `rounds`, a
single one the usage per model).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.results.cache_report import caching_report, merge_caching
from airflow_provider_claude_batch.results.checks import RESULTS_RETENTION_SECONDS, utc_iso
from airflow_provider_claude_batch.results.pricing import Cost, cost_of
from airflow_provider_claude_batch.results.totals import EXAMPLES_KEPT, FAILED_TYPES, INVALID_OUTPUT

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.requests.structured import OutputSpec
    from airflow_provider_claude_batch.results.pricing import ModelPrice
    from airflow_provider_claude_batch.results.totals import Totals

MANIFEST_NAME = "_manifest.json"
MANIFEST_VERSION = 1
# A manifest, or a part of one, as JSON (what `_manifest.json` holds and readers index by key).
Json = dict[str, Any]


@dataclass
class FileInfo:
    """One published file, as the manifest lists it."""

    name: str
    bytes: int = 0
    sha256: str = ""
    rows: int | None = None


@dataclass(frozen=True)
class Summary:
    """What a manifest says of the rows it covers: their counts, usage and cost."""

    requests: int
    counts: dict[str, int]
    error_types: dict[str, int]
    usage_total: dict[str, int]
    cost: dict[str, object]
    cost_complete: bool
    result_problems: dict[str, Json]
    # Per model: only a single landing has it (round manifests keep theirs).
    usage: dict[str, dict[str, int]] | None = None
    # With an output_type: its schema, digest and columns, and how many outputs validated.
    structured_output: Json | None = None
    # What prompt caching read, wrote and saved (results/cache_report.py).
    caching: Json | None = None


def build_manifest(
    output_path: str,
    written_at: float,
    batches: Sequence[Json],
    summary: Summary,
    files: Sequence[FileInfo],
    rounds: Sequence[Json] | None = None,
    estimate: Mapping[str, Any] | None = None,
) -> Json:
    """The manifest of a landing under `output_path`: its batches, its rows' summary and its files (and,
    when preflight made one, the cost estimate beside the actual cost).
    """
    failed = sum(summary.counts.get(kind, 0) for kind in FAILED_TYPES) + summary.error_types.get(INVALID_OUTPUT, 0)
    manifest: Json = {
        "manifest_version": MANIFEST_VERSION,
        "written_at": utc_iso(written_at),
        "output_path": output_path,
    }
    if rounds is not None:
        manifest["rounds"] = list(rounds)
    manifest |= {
        "batches": list(batches),
        "requests": summary.requests,
        "counts": summary.counts,
        "failed": failed,
        "failed_fraction": round(failed / summary.requests, 6) if summary.requests else 0.0,
        "error_types": summary.error_types,
    }
    if summary.structured_output is not None:
        manifest["structured_output"] = summary.structured_output
    if summary.usage is not None:
        manifest["usage"] = summary.usage
    manifest |= {"usage_total": summary.usage_total, "cost": summary.cost}
    if summary.caching is not None:
        manifest["caching"] = summary.caching
    manifest |= {
        "cost_complete": summary.cost_complete,
    }
    if estimate is not None:
        routes = {str(r.get("route", "batch")) for r in rounds} if rounds else {"batch"}
        manifest["estimate"] = estimate_entry(estimate, summary, routes)
    return manifest | {"result_problems": summary.result_problems, "files": [vars(f) for f in files]}


def estimate_entry(estimate: Mapping[str, Any], summary: Summary, routes: Collection[str] = ("batch",)) -> Json:
    """Preflight's estimate as it was logged before the first create, with the actual figures beside it.

    ``actual_batch_usd`` (every token at the batch price) against the batch range judges the estimate's
    tokens; ``actual_paid_usd`` against the range of the prices the `routes` paid judges the bill: the
    standard range when every round went through the Messages API, from the batch low to the standard
    high when both routes carried rounds.
    """
    usage = summary.usage_total
    input_total = sum(
        usage.get(name, 0)
        for name in ("input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens")
    )
    actual_usd = summary.cost.get("batch_usd", 0.0)
    paid = summary.cost.get("paid_usd", actual_usd)
    low, high = estimate.get("batch_usd_low", 0.0), estimate.get("batch_usd_high", 0.0)
    paid_low = low if "batch" in routes else estimate.get("standard_usd_low", 0.0)
    paid_high = estimate.get("standard_usd_high", 0.0) if "sync" in routes else high
    return {
        **estimate,
        "actual_input_tokens": input_total,
        "actual_output_tokens": usage.get("output_tokens", 0),
        "actual_batch_usd": actual_usd,
        "actual_within_range": _within(actual_usd, low, high),
        "actual_paid_usd": paid,
        "paid_usd_low": paid_low,
        "paid_usd_high": paid_high,
        "paid_within_range": _within(paid, paid_low, paid_high),
    }


def _within(value: object, low: float, high: float) -> bool:
    return isinstance(value, int | float) and low - 1e-6 <= value <= high + 1e-6


def manifest_bytes(manifest: Json) -> bytes:
    """The manifest as `_manifest.json` holds it: indented JSON."""
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2)


def batch_entry(batch: MessageBatch, raw_file: str, checked_against: str) -> Json:
    """A landed batch as the manifest lists it: its dates, counts, raw file and how it was checked."""
    created = batch.created_at.timestamp()
    return {
        "id": batch.id,
        "created_at": utc_iso(created),
        "ended_at": utc_iso(batch.ended_at.timestamp()) if batch.ended_at else None,
        "results_expire_at": utc_iso(created + RESULTS_RETENTION_SECONDS),
        "canceled": batch.cancel_initiated_at is not None,
        "request_counts": batch.request_counts.to_dict(),
        "raw_file": raw_file,
        "results_checked_against": checked_against,
    }


def structured_entry(spec: OutputSpec, columns: Mapping[str, str], validated: int, invalid: int) -> Json:
    """The manifest's record of an output_type: its schema and digest, its columns' kinds, the verdicts."""
    return {
        "name": spec.name,
        "schema_sha256": spec.digest,
        "schema": spec.schema,
        "columns": dict(columns),
        "validated": validated,
        "invalid_output": invalid,
    }


def landed_summary(
    totals: Totals,
    prices: Mapping[str, ModelPrice] | None = None,
    structured_output: Json | None = None,
    warmup: Mapping[str, Any] | None = None,
    *,
    standard_price: bool = False,
) -> Summary:
    """The summary of batches landed in one pass, priced by `prices` (default: the dated table), with the
    output_type's verdicts and the cache warm-up (`warmup`, from the submission record) that preceded them;
    `standard_price`: a Messages API round (its caching section priced as paid).
    """
    cost = cost_of(totals.usage_by_model, prices) if prices else cost_of(totals.usage_by_model)
    return Summary(
        requests=totals.requests,
        counts=totals.counts,
        error_types=totals.error_types,
        usage_total=totals.usage_total(),
        cost=cost.to_dict(),
        # Tokens of a flagged result or an unpriced model are not priced.
        cost_complete=not totals.problems and not cost.unpriced_models,
        result_problems=result_problems(totals),
        usage={model: usage.reported() for model, usage in sorted(totals.usage_by_model.items())},
        structured_output=structured_output,
        caching=caching_report(totals.usage_by_model, prices, warmup, standard_price=standard_price),
    )


def result_problems(totals: Totals) -> dict[str, Json]:
    """The manifest's flags: results whose usage could not be counted, with a few custom_ids each."""
    return {
        kind: {"results": number, "examples": totals.problem_examples.get(kind, [])}
        for kind, number in sorted(totals.problems.items())
    }


def round_entry(number: int, manifest: Mapping[str, Any]) -> Json:
    """One round, as the folded manifest lists it, from the round's own manifest."""
    return {
        "round": number,
        "folder": f"rounds/round-{number}",
        "batch_ids": [b["id"] for b in manifest["batches"]],
        "requests": manifest["requests"],
        "counts": manifest["counts"],
        "cost": manifest["cost"],
    }


def rounds_summary(
    manifests: Sequence[Mapping[str, Any]],
    requests: int,
    counts: dict[str, int],
    error_types: dict[str, int],
    structured_output: Json | None = None,
) -> Summary:
    """The summary of the final rows folded from rounds: their counts, and the rounds' usage and cost."""
    usage_total: dict[str, int] = {}
    for m in manifests:
        for name, value in m["usage_total"].items():
            usage_total[name] = usage_total.get(name, 0) + value
    first_cost = manifests[0]["cost"]
    cost = Cost(
        batch_usd=sum(m["cost"]["batch_usd"] for m in manifests),
        standard_usd=sum(m["cost"]["standard_usd"] for m in manifests),
        unpriced_models=sorted({u for m in manifests for u in m["cost"]["unpriced_models"]}),
    )
    return Summary(
        requests=requests,
        counts=counts,
        error_types=error_types,
        usage_total=usage_total,
        cost=cost.to_dict() | {k: first_cost[k] for k in ("prices_as_of", "prices_source")},
        cost_complete=all(m.get("cost_complete", True) for m in manifests),
        result_problems=_merged_problems(manifests),
        structured_output=structured_output,
        caching=merge_caching([m["caching"] for m in manifests if m.get("caching")]),
    )


ROUTES = ("batch", "sync")


def round_route(manifest: Mapping[str, Any]) -> str:
    """How a round's requests were sent: ``"sync"`` (the Messages API) or ``"batch"``."""
    return str(manifest.get("route", "batch"))


def paid_usd(manifest: Mapping[str, Any]) -> float:
    """What a round's usage was billed: the batch price, or the standard price through the Messages API."""
    cost = manifest["cost"]
    return float(cost["standard_usd"] if round_route(manifest) == "sync" else cost["batch_usd"])


def route_totals(manifests: Sequence[Mapping[str, Any]], final_counts: Mapping[str, Mapping[str, int]]) -> Json:
    """Per route: the final rows it gave (counts) and every attempt's tokens and dollars sent that way."""
    routes: Json = {}
    for route in ROUTES:
        counts = dict(final_counts.get(route, dict.fromkeys(("succeeded", "errored", "canceled", "expired"), 0)))
        usage: dict[str, int] = {}
        dollars = 0.0
        for m in manifests:
            if round_route(m) != route:
                continue
            for name, value in m["usage_total"].items():
                usage[name] = usage.get(name, 0) + value
            dollars += paid_usd(m)
        routes[route] = {
            "requests": sum(counts.values()),
            "counts": counts,
            "usage_total": usage,
            "usd": round(dollars, 6),
        }
    return routes


def with_route_costs(summary: Summary, manifests: Sequence[Mapping[str, Any]]) -> Summary:
    """`summary` with what was paid, what a batch-only run would have cost, and the premium for the deadline.

    `batch_usd` stays every token at the batch price: what sending all of it through batches would
    have cost (``batch_only_usd``); ``paid_usd`` bills the Messages API rounds at the standard price.
    """
    cost = dict(summary.cost)
    paid = sum(paid_usd(m) for m in manifests)
    batch_only = float(cost["batch_usd"])  # type: ignore[arg-type]
    cost |= {
        "paid_usd": round(paid, 6),
        "batch_only_usd": round(batch_only, 6),
        "deadline_premium_usd": round(paid - batch_only, 6),
        "savings_usd": round(float(cost["standard_usd"]) - paid, 6),  # type: ignore[arg-type]
    }
    return dataclasses.replace(summary, cost=cost)


def _merged_problems(manifests: Sequence[Mapping[str, Any]]) -> dict[str, Json]:
    merged: dict[str, Json] = {}
    for m in manifests:
        for kind, found in m.get("result_problems", {}).items():
            into = merged.setdefault(kind, {"results": 0, "examples": []})
            into["results"] += found["results"]
            into["examples"] = (into["examples"] + found["examples"])[:EXAMPLES_KEPT]
    return merged
