"""A large input's token sample and estimate, read in one pass each (preflight/large.py), say what the
sorted path (preflight/sample.py) says of the same counted requests."""

from __future__ import annotations

import random
from array import array

import pytest

from airflow_provider_claude_batch.preflight.large import extrapolate_in_one_pass, plan_large_sample
from airflow_provider_claude_batch.preflight.sample import extrapolate, plan_sample


def _input(seed: int, total: int = 6_000) -> tuple[array[int], array[int]]:
    rng = random.Random(seed)
    sizes = array(
        "Q", (rng.randint(200, 40_000) if rng.random() > 0.01 else rng.randint(300_000, 900_000) for _ in range(total))
    )
    models = array("H", (rng.choice((0, 0, 1, 2)) for _ in range(total)))
    return sizes, models


def _counts(sizes: array[int], counted: list[int], seed: int) -> dict[int, int]:
    rng = random.Random(seed)
    return {i: max(1, round(sizes[i] / rng.uniform(3.2, 4.6))) for i in counted}


@pytest.mark.parametrize("seed", range(6))
def test_the_one_pass_estimate_equals_the_sorted_one_for_the_same_counts(seed: int) -> None:
    sizes, models = _input(seed)
    plan = plan_sample(sizes, models)
    counts = _counts(sizes, plan.counted, seed)
    if seed == 5:
        counts = {}  # nothing could be counted: every model falls back to bytes per token
    large_from = {0: 150_000.0, 2: 60_000.0}
    sorted_way = extrapolate(plan, sizes, counts, large_from)
    one_pass = extrapolate_in_one_pass(plan, iter(sizes), counts, {i: sizes[i] for i in counts}, large_from)
    assert one_pass == sorted_way
    assert sorted_way.large  # (the thresholds are reached by some requests: the large ones are compared too)


def test_the_large_sample_is_the_sorted_sample_when_it_keeps_every_request() -> None:
    sizes, models = _input(7)
    assert (
        plan_large_sample(iter(sizes), models, len(sizes), keep=len(sizes)).counted
        == plan_sample(sizes, models).counted
    )


def test_a_subsample_counts_a_few_dozen_requests_including_each_models_largest() -> None:
    sizes, models = _input(8, total=60_000)
    plan = plan_large_sample(iter(sizes), models, len(sizes), keep=5_000)
    assert 30 <= len(plan.counted) <= 45 and plan.counted == sorted(plan.counted) and not plan.every_request
    for number in (0, 1, 2):
        largest = max((s, i) for i, s in enumerate(sizes) if models[i] == number)[1]
        assert largest in plan.counted
