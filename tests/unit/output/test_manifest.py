"""One manifest builder: a single landing and the fold of resubmission rounds write the same fields,
each summed from what they landed."""

from __future__ import annotations

import json
from pathlib import Path

from airflow_provider_claude_batch.output.manifest import (
    FileInfo,
    Summary,
    build_manifest,
    landed_summary,
    rounds_summary,
)
from airflow_provider_claude_batch.output.rounds import finalize_rounds, round_folder
from airflow_provider_claude_batch.results.fold import fold_lines
from airflow_provider_claude_batch.results.totals import Totals
from airflow_provider_claude_batch.storage import as_path
from tests.unit.output.test_landing_blocks import CREATED, _Hook, _land, _result, _served

# What only one of the two paths has: the usage per model (a single landing), the rounds and the
# routes they took (a fold).
ONLY_SINGLE, ONLY_FOLDED = {"usage"}, {"rounds", "routes"}


def _land_two_rounds(out: Path) -> tuple[dict, dict, dict]:
    """Round 0: ten requests (four failed); round 1: two of the failures again, now succeeded."""
    first = _served("r", 10)
    retried = _result("r-1", 0) + b"\n" + _result("r-2", 4) + b"\n"
    hook = _Hook({"msgbatch_r0": [[first]], "msgbatch_r1": [[retried]]}, {"msgbatch_r0": 10, "msgbatch_r1": 2})
    round0 = _land(hook, ["msgbatch_r0"], Path(round_folder(as_path(str(out)), 0).path))
    round1 = _land(hook, ["msgbatch_r1"], Path(round_folder(as_path(str(out)), 1).path))
    final = finalize_rounds(as_path(str(out)), [round0, round1], ("jsonl", "csv"), CREATED.timestamp() + 120)
    return round0, round1, final


def test_a_single_landing_and_a_fold_of_rounds_write_the_same_fields_in_the_same_order(tmp_path: Path) -> None:
    round0, _, final = _land_two_rounds(tmp_path)
    assert [k for k in round0 if k not in ONLY_SINGLE] == [k for k in final if k not in ONLY_FOLDED]
    assert json.loads((tmp_path / "_manifest.json").read_bytes()) == final
    assert [b["id"] for b in final["batches"]] == ["msgbatch_r0", "msgbatch_r1"]
    assert set(final["batches"][0]) == set(round0["batches"][0])


def test_the_fold_counts_its_final_rows_and_sums_the_rounds_usage_and_cost(tmp_path: Path) -> None:
    round0, round1, final = _land_two_rounds(tmp_path)
    assert final["requests"] == round0["requests"] == 10
    # r-1 (errored) and r-2 (expired) succeeded in round 1: two failures fewer.
    assert final["failed"] == round0["failed"] - 2
    assert final["failed_fraction"] == round(final["failed"] / 10, 6)
    assert final["usage_total"] == {
        k: round0["usage_total"][k] + round1["usage_total"][k] for k in final["usage_total"]
    }
    assert final["cost"]["batch_usd"] == round(round0["cost"]["batch_usd"] + round1["cost"]["batch_usd"], 6)
    assert [r["batch_ids"] for r in final["rounds"]] == [["msgbatch_r0"], ["msgbatch_r1"]]
    assert [f["name"] for f in final["files"]] == ["results.jsonl", "failures.jsonl", "results.csv"]
    assert final["files"][0]["rows"] == 10


def test_the_builder_derives_failed_from_the_counts_whoever_calls_it() -> None:
    totals = Totals()
    fold_lines(_served("x", 10), "msgbatch_x", totals)
    single = build_manifest("file:///out", 0.0, [], landed_summary(totals), [FileInfo("results.jsonl", 1, "ab", 10)])
    assert single["failed"] == totals.failed == 6
    assert single["written_at"] == "1970-01-01T00:00:00Z"
    assert single["files"] == [{"name": "results.jsonl", "bytes": 1, "sha256": "ab", "rows": 10}]
    folded = build_manifest(
        "file:///out", 0.0, [], rounds_summary([single], 10, totals.counts, totals.error_types), [], rounds=[]
    )
    for field in ("requests", "counts", "failed", "failed_fraction", "error_types", "usage_total"):
        assert folded[field] == single[field], field
    # The fold sums the rounds' costs as their manifests wrote them (rounded to a millionth of a dollar).
    assert {k: v for k, v in folded["cost"].items() if k != "savings_usd"} == {
        k: v for k, v in single["cost"].items() if k != "savings_usd"
    }
    assert abs(folded["cost"]["savings_usd"] - single["cost"]["savings_usd"]) < 1.5e-6


def test_problems_of_every_round_are_merged_with_a_few_examples() -> None:
    problem = {"results": 4, "examples": ["a", "b", "c", "d"]}
    rounds = [
        {"usage_total": {}, "cost": _cost(), "result_problems": {"negative_usage": problem}, "cost_complete": False},
        {"usage_total": {}, "cost": _cost(), "result_problems": {"negative_usage": problem}},
    ]
    summary: Summary = rounds_summary(rounds, 8, {"succeeded": 8}, {})
    assert summary.result_problems == {"negative_usage": {"results": 8, "examples": ["a", "b", "c", "d", "a"]}}
    assert summary.cost_complete is False


def _cost() -> dict:
    return {"batch_usd": 0.5, "standard_usd": 1.0, "unpriced_models": [], "prices_as_of": "d", "prices_source": "s"}


def test_the_fold_gives_rows_tokens_and_dollars_per_route_and_the_premium_paid_for_a_sync_round(
    tmp_path: Path,
) -> None:
    from airflow_provider_claude_batch.output.manifest import route_totals, with_route_costs

    round0, round1, final = _land_two_rounds(tmp_path)
    assert final["routes"]["batch"]["requests"] == 10 and final["routes"]["sync"]["requests"] == 0
    assert final["cost"]["deadline_premium_usd"] == 0 and final["cost"]["paid_usd"] == final["cost"]["batch_usd"]
    # The same second round, sent through the Messages API: billed at the standard price.
    as_sync = {**round1, "route": "sync"}
    routes = route_totals([round0, as_sync], {"batch": {"succeeded": 8}, "sync": {"succeeded": 2}})
    assert routes["sync"]["usd"] == round1["cost"]["standard_usd"]
    assert routes["batch"]["usd"] == round0["cost"]["batch_usd"]
    assert routes["sync"]["usage_total"] == round1["usage_total"]
    summary = rounds_summary([round0, as_sync], 10, {}, {})
    cost = with_route_costs(summary, [round0, as_sync]).cost
    assert cost["batch_only_usd"] == summary.cost["batch_usd"]
    assert cost["paid_usd"] == round(round0["cost"]["batch_usd"] + round1["cost"]["standard_usd"], 6)
    assert cost["deadline_premium_usd"] == round(round1["cost"]["standard_usd"] - round1["cost"]["batch_usd"], 6)


def test_what_was_paid_is_judged_against_the_range_of_the_prices_the_rounds_paid(tmp_path: Path) -> None:
    from airflow_provider_claude_batch.output.manifest import estimate_entry, with_route_costs

    round0, round1, _ = _land_two_rounds(tmp_path)
    as_sync = {**round1, "route": "sync"}
    summary = with_route_costs(rounds_summary([round0, as_sync], 10, {}, {}), [round0, as_sync])
    paid = summary.cost["paid_usd"]
    estimate = {"batch_usd_low": paid / 4, "batch_usd_high": paid / 2, "standard_usd_low": paid / 2}
    estimate["standard_usd_high"] = paid * 1.5
    both = estimate_entry(estimate, summary, {"batch", "sync"})
    assert both["actual_paid_usd"] == paid and both["actual_batch_usd"] == summary.cost["batch_usd"]
    assert (both["paid_usd_low"], both["paid_usd_high"]) == (paid / 4, paid * 1.5) and both["paid_within_range"]
    batch_only = estimate_entry(estimate, summary, {"batch"})
    assert (batch_only["paid_usd_low"], batch_only["paid_usd_high"]) == (paid / 4, paid / 2)
    assert batch_only["paid_within_range"] is False  # paid more than the batch range allows
    sync_only = estimate_entry(estimate, summary, {"sync"})
    assert (sync_only["paid_usd_low"], sync_only["paid_usd_high"]) == (paid / 2, paid * 1.5)
    # A single landing has no paid_usd of its own: it paid the batch price.
    single = estimate_entry(estimate, landed_summary(Totals()))
    assert single["actual_paid_usd"] == single["actual_batch_usd"] == 0
