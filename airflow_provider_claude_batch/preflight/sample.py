"""Which requests to count with the free token-counting endpoint, and what the counts say of the rest. Pure.

Few requests are each counted. Many are sorted by size within each model and cut into strata of equal
count; the request at the middle of each stratum is counted, and so is each model's largest request
(the one most likely over a context window). The others are estimated from their size by linear
interpolation between the counted requests of their model (proportionally below the smallest),
so a run of 100,000 requests costs a few dozen calls.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

COUNT_ALL_UP_TO = 40  # up to this many requests, every one is counted
SAMPLE_CALLS = 32  # about this many counting calls for a large input (at least 2 per model)
# Without counts, a token is taken for this many bytes of a request as sent (English text runs 3.5-4.5).
FALLBACK_BYTES_PER_TOKEN = 4.0


@dataclass(frozen=True)
class SamplePlan:
    """The requests to count, and each model's requests sorted by size (for the extrapolation)."""

    counted: list[int]
    by_model: dict[int, list[int]]  # model number -> request indexes, smallest first
    every_request: bool


def plan_sample(
    sizes: Sequence[int],
    model_index: Sequence[int],
    *,
    count_all_up_to: int = COUNT_ALL_UP_TO,
    calls: int = SAMPLE_CALLS,
) -> SamplePlan:
    """Which requests to count: all of few, else a stratified sample per model plus each model's largest."""
    total = len(sizes)
    groups: dict[int, list[int]] = {}
    if total and min(model_index) == max(model_index):
        groups[model_index[0]] = list(range(total))  # one model: no per-request grouping loop
    else:
        for index, number in enumerate(model_index):
            groups.setdefault(number, []).append(index)
    by_model = {number: sorted(members, key=sizes.__getitem__) for number, members in groups.items()}
    if total <= count_all_up_to:
        return SamplePlan(list(range(total)), by_model, every_request=True)
    counted: list[int] = []
    for members in by_model.values():
        strata = min(len(members), max(2, round(calls * len(members) / total)))
        for stratum in range(strata):
            low, high = len(members) * stratum // strata, len(members) * (stratum + 1) // strata
            counted.append(members[(low + high - 1) // 2])
        counted.append(members[-1])
    return SamplePlan(sorted(set(counted)), by_model, every_request=False)


@dataclass(frozen=True)
class TokenEstimate:
    """Input tokens per model (counted where counted, else estimated), and the requests above a threshold."""

    tokens_by_model: dict[int, int]
    large: dict[int, int]  # request index -> estimated tokens, for those at or above `large_from` of their model


def extrapolate(
    plan: SamplePlan,
    sizes: Sequence[int],
    counts: Mapping[int, int],
    large_from: Mapping[int, float] | None = None,
) -> TokenEstimate:
    """Every request's tokens: its count, or its size read against its model's counted requests.

    A model none of whose requests could be counted falls back to `FALLBACK_BYTES_PER_TOKEN`.
    `large_from` (model number -> tokens) asks for the requests estimated at or above it (a context
    window's edge, a pricing band).
    """
    tokens_by_model: dict[int, int] = {}
    large: dict[int, int] = {}
    for number, members in plan.by_model.items():
        points = _points(members, sizes, counts)
        threshold = (large_from or {}).get(number)
        total = 0
        for index in members:
            tokens = counts.get(index)
            if tokens is None:
                tokens = _interpolate(points, sizes[index])
            total += tokens
            if threshold is not None and tokens >= threshold:
                large[index] = tokens
        tokens_by_model[number] = total
    return TokenEstimate(tokens_by_model, large)


def _points(members: Sequence[int], sizes: Sequence[int], counts: Mapping[int, int]) -> tuple[list[int], list[float]]:
    """The counted (size, tokens) points of one model, by size (tokens averaged over equal sizes)."""
    by_size: dict[int, list[int]] = {}
    for index in members:
        if index in counts:
            by_size.setdefault(sizes[index], []).append(counts[index])
    xs = sorted(by_size)
    return xs, [sum(by_size[x]) / len(by_size[x]) for x in xs]


def _interpolate(points: tuple[list[int], list[float]], size: int) -> int:
    xs, ys = points
    if not xs:
        return max(1, round(size / FALLBACK_BYTES_PER_TOKEN))
    at = bisect_right(xs, size)
    if at == 0:
        value = ys[0] * size / xs[0] if xs[0] else ys[0]
    elif at == len(xs):
        value = ys[-1] * size / xs[-1] if xs[-1] else ys[-1]
    else:
        x0, x1, y0, y1 = xs[at - 1], xs[at], ys[at - 1], ys[at]
        value = y0 + (y1 - y0) * (size - x0) / (x1 - x0)
    return max(1, round(value))
