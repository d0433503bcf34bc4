"""The token sample and estimate of an input too large to sort in memory (more than `LARGE_INPUT`
requests): the same plan and the same lines as preflight/sample.py, read in one pass each. Pure.

`plan_sample` sorts each model's requests by size, a Python int per request (about 40 bytes each):
for 10,000,000 requests that is more than the batches' bodies. Here the strata are drawn from a
systematic subsample (every k-th request, at most `SUBSAMPLE` of them, plus each model's largest
request), and `extrapolate_in_one_pass` sums the same piecewise-linear lines over every request by
segment (a count and a size sum per segment, as `extrapolate` sums its slices), so a counted set
gives the same tokens either way.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from dataclasses import dataclass
from math import ceil
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.preflight.sample import (
    SamplePlan,
    TokenEstimate,
    _Line,
    _points,
    _segments,
    _tokens_at,
    plan_sample,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

LARGE_INPUT = 50_000  # above this many requests, preflight samples and estimates in one pass each
SUBSAMPLE = 50_000  # the strata are drawn from at most about this many requests (plus each model's largest)


def plan_large_sample(sizes: Iterable[int], model_of: Sequence[int], total: int, keep: int = SUBSAMPLE) -> SamplePlan:
    """`plan_sample` over every k-th request and each model's largest, in the input's request indexes."""
    stride = max(1, ceil(total / keep))
    indexes: array[int] = array("Q")
    picked_sizes: array[int] = array("Q")
    largest: dict[int, tuple[int, int]] = {}  # model number -> (size, request index)
    for index, (size, number) in enumerate(zip(sizes, model_of, strict=True)):
        best = largest.get(number)
        if best is None or size > best[0]:
            largest[number] = (size, index)
        if index % stride == 0:
            indexes.append(index)
            picked_sizes.append(size)
    for size, index in largest.values():
        if index % stride:
            at = bisect_left(indexes, index)
            indexes.insert(at, index)
            picked_sizes.insert(at, size)
    picked_models = array("H", (model_of[i] for i in indexes))
    sub = plan_sample(picked_sizes, picked_models)
    return SamplePlan(sorted(indexes[p] for p in sub.counted), {}, every_request=False, model_of=model_of)


@dataclass
class _Model:
    """One model's lines (one per segment between its counted sizes) and what each segment summed."""

    xs: list[int]
    ys: list[float]
    lines: list[_Line]
    large_from_size: list[float]  # per segment: the smallest size whose line may reach the threshold
    requests: list[int]
    size_sums: list[int]


def extrapolate_in_one_pass(
    plan: SamplePlan,
    sizes: Iterable[int],
    counts: Mapping[int, int],
    counted_sizes: Mapping[int, int],
    large_from: Mapping[int, float] | None = None,
) -> TokenEstimate:
    """`extrapolate`'s result, read from `sizes` (every request's, in order) in one pass.

    `counted_sizes`: the size of each counted request (the lines go through them). Each request adds
    itself to its segment's count and size sum, and one whose size may reach its model's `large_from`
    is estimated alone: `sizes` is read once and nothing is kept per request.
    """
    thresholds = large_from or {}
    counted_of: dict[int, list[int]] = {}
    for index in counts:
        counted_of.setdefault(plan.model_of[index], []).append(index)
    models: dict[int, _Model] = {}
    large: dict[int, int] = {}
    for index, (size, number) in enumerate(zip(sizes, plan.model_of, strict=True)):
        model = models.get(number)
        if model is None:
            model = models[number] = _model(counted_of.get(number, []), counts, counted_sizes, thresholds.get(number))
        segment = bisect_left(model.xs, size)
        model.requests[segment] += 1
        model.size_sums[segment] += size
        if size >= model.large_from_size[segment]:
            tokens = round(model.lines[segment](size, 1))
            if tokens >= thresholds[number]:
                large[index] = tokens
    tokens_by_model: dict[int, int] = {}
    for number, model in models.items():
        total = 0.0
        for line, requests, size_sum in zip(model.lines, model.requests, model.size_sums, strict=True):
            if requests:
                total += line(size_sum, requests)
        threshold = thresholds.get(number)
        for index in counted_of.get(number, []):
            total += counts[index] - _tokens_at(model.xs, model.ys, counted_sizes[index])
            if threshold is not None:
                large.pop(index, None)
                if counts[index] >= threshold:
                    large[index] = counts[index]
        tokens_by_model[number] = max(sum(model.requests), round(total))
    return TokenEstimate(tokens_by_model, large)


def _model(
    counted: Sequence[int], counts: Mapping[int, int], counted_sizes: Mapping[int, int], threshold: float | None
) -> _Model:
    """A model's lines through its counted (size, tokens) points, as `extrapolate` draws them."""
    xs, ys = _points(counted, counted_sizes, counts)
    lines = [line for _, _, line in _segments([], xs, ys)]
    lows = [0, *xs]  # segment k holds the sizes in (xs[k-1], xs[k]]
    return _Model(
        xs,
        ys,
        lines,
        [
            float("inf") if threshold is None else _first_size_reaching(line, threshold, low)
            for line, low in zip(lines, lows, strict=True)
        ],
        [0] * len(lines),
        [0] * len(lines),
    )


def _first_size_reaching(line: _Line, threshold: float, low: int) -> float:
    """The smallest size at or above `low` at which `line` may reach `threshold` (a bound: checked exactly)."""
    if max(line.floor, 1.0) >= threshold - 1:
        return low
    if line.slope <= 0:
        return low if line.intercept + line.slope * low >= threshold - 1 else float("inf")
    return max(low, (threshold - 1 - line.intercept) / line.slope)
