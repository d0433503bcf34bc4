"""The counting sample, the extrapolation by size, the dollar range, the budget and the canary verdict. Pure."""

from __future__ import annotations

import json
import random

import pytest

from airflow_provider_claude_batch.preflight.canary import canary_failures
from airflow_provider_claude_batch.preflight.estimate import CostEstimate, ModelTokens, budget_verdict, estimate_cost
from airflow_provider_claude_batch.preflight.sample import FALLBACK_BYTES_PER_TOKEN, extrapolate, plan_sample


def test_few_requests_are_each_counted() -> None:
    plan = plan_sample([10, 20, 30], [0, 0, 1])
    assert plan.every_request and plan.counted == [0, 1, 2]
    assert plan.by_model == {0: [0, 1], 1: [2]}


def test_many_requests_get_a_few_dozen_counts_stratified_by_size_with_each_models_largest() -> None:
    rng = random.Random(7)
    sizes = [rng.randint(200, 20_000) for _ in range(100_000)]
    models = [0] * 90_000 + [1] * 10_000
    plan = plan_sample(sizes, models)
    assert not plan.every_request
    assert 30 <= len(plan.counted) <= 40
    for number, members in plan.by_model.items():
        assert members[-1] in plan.counted  # the largest of each model
        assert sum(1 for i in plan.counted if models[i] == number) >= 3
    counted_sizes = sorted(sizes[i] for i in plan.counted if models[i] == 0)
    assert counted_sizes[0] < 2_000 and counted_sizes[-1] == max(sizes[:90_000])  # spread over the sizes


def test_the_extrapolation_is_exact_when_tokens_are_linear_in_size() -> None:
    rng = random.Random(3)
    sizes = [rng.randint(100, 50_000) for _ in range(5_000)]
    truth = [(s - 60) // 4 for s in sizes]  # an overhead, then a quarter of the bytes
    plan = plan_sample(sizes, [0] * len(sizes))
    counts = {i: truth[i] for i in plan.counted}
    estimate = extrapolate(plan, sizes, counts, large_from={0: 10_000})
    assert estimate.tokens_by_model[0] == pytest.approx(sum(truth), rel=0.002)
    over = {i for i, t in enumerate(truth) if t >= 10_000}
    assert len(set(estimate.large) ^ over) <= 2  # (rounding at the edge)


def test_without_any_count_the_estimate_is_size_based() -> None:
    plan = plan_sample([400] * 50, [0] * 50)
    assert extrapolate(plan, [400] * 50, {}).tokens_by_model == {0: 50 * round(400 / FALLBACK_BYTES_PER_TOKEN)}


def test_the_dollar_range_runs_from_no_output_to_every_max_tokens_at_batch_and_standard_price() -> None:
    estimate = estimate_cost(
        {"claude-sonnet-5-5": ModelTokens(requests=10, input_tokens=1_000_000, max_output_tokens=100_000)},
        "counted",
        10,
    )
    # Sonnet 5.5: $2 in / $10 out per million at standard price, half in a batch.
    assert estimate.standard_usd_low == pytest.approx(2.0) and estimate.batch_usd_low == pytest.approx(1.0)
    assert estimate.standard_usd_high == pytest.approx(3.0) and estimate.batch_usd_high == pytest.approx(1.5)
    assert CostEstimate.from_dict(json.loads(json.dumps(estimate.to_dict()))) == estimate
    assert "every request counted" in estimate.describe() and "$1.0000" in estimate.describe()


def test_the_long_prompt_band_is_priced_apart() -> None:
    short = estimate_cost({"claude-haiku-5-5": ModelTokens(1, 200_000, 1000)}, "counted", 1)
    long = estimate_cost({"claude-haiku-5-5": ModelTokens(1, 200_000, 1000, 200_000, 1000)}, "counted", 1)
    assert long.batch_usd_low == pytest.approx(5 * short.batch_usd_low)


def test_the_budget_refuses_over_the_low_figure_warns_over_the_high_one_and_names_both() -> None:
    estimate = estimate_cost({"claude-sonnet-5-5": ModelTokens(10, 1_000_000, 100_000)}, "sampled", 5)
    refused = budget_verdict(estimate, 0.5)
    assert refused is not None and refused[0] == "refuse"
    assert "$1.0000" in refused[1] and "$1.5000" in refused[1] and "Raise max_cost_usd" in refused[1]
    warned = budget_verdict(estimate, 1.2)
    assert warned is not None and warned[0] == "warn" and "lower max_tokens" in warned[1]
    assert budget_verdict(estimate, 2) is None
    unpriced = estimate_cost({"claude-new-9": ModelTokens(1, 10, 10)}, "counted", 1)
    cannot = budget_verdict(unpriced, 100)
    assert cannot is not None and cannot[0] == "refuse" and "claude-new-9" in cannot[1]


def _line(custom_id: str, kind: str, error_type: str = "") -> bytes:
    result: dict[str, object] = {"type": kind}
    if kind == "errored":
        result["error"] = {"type": "error", "error": {"type": error_type, "message": f"{error_type} here"}}
    return json.dumps({"custom_id": custom_id, "result": result}).encode()


def test_the_canary_fails_on_the_requests_own_errors_only() -> None:
    lines = [
        _line("ok", "succeeded"),
        _line("busy", "errored", "overloaded_error"),
        _line("late", "expired"),
        _line("bad", "errored", "invalid_request_error"),
        _line("gone", "errored", "not_found_error"),
    ]
    failures, seen = canary_failures(lines)
    assert seen == 5
    assert [(f.custom_id, f.error_type) for f in failures] == [
        ("bad", "invalid_request_error"),
        ("gone", "not_found_error"),
    ]


def test_uncounted_requests_past_the_window_edge_are_chosen_largest_first() -> None:
    from airflow_provider_claude_batch.preflight.sample import counting_method, uncounted_near

    large = {1: 950, 2: 990, 3: 999, 4: 2000}
    assert uncounted_near(large, {3: 999}, [0, 0, 0, 0, 1], {0: 900.0}) == [2, 1]  # 3 is counted; model 1 has no edge
    plan = plan_sample([10] * 5, [0] * 5)
    assert [counting_method(plan, n, 5) for n in (0, 3, 5)] == ["size-based", "sampled", "counted"]
