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

    from airflow_provider_claude_batch.preflight.estimate import Method

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
    model_of: Sequence[int]  # request index -> model number


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
        return SamplePlan(list(range(total)), by_model, every_request=True, model_of=model_index)
    counted: list[int] = []
    for members in by_model.values():
        strata = min(len(members), max(2, round(calls * len(members) / total)))
        for stratum in range(strata):
            low, high = len(members) * stratum // strata, len(members) * (stratum + 1) // strata
            counted.append(members[(low + high - 1) // 2])
        counted.append(members[-1])
    return SamplePlan(sorted(set(counted)), by_model, every_request=False, model_of=model_index)


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
    window's edge, a pricing band). Sums run a segment (between two counted sizes) at a time, so
    100,000 requests cost a few slices, not a Python step each; only segments that reach
    `large_from` are walked request by request.
    """
    tokens_by_model: dict[int, int] = {}
    large: dict[int, int] = {}
    counted_of: dict[int, list[int]] = {}
    for index in counts:
        counted_of.setdefault(plan.model_of[index], []).append(index)
    for number, members in plan.by_model.items():
        ordered = [sizes[i] for i in members]
        counted = counted_of.get(number, [])
        xs, ys = _points(counted, sizes, counts)
        threshold = (large_from or {}).get(number)
        total = 0.0
        for low, high, line in _segments(ordered, xs, ys):
            if low == high:
                continue
            total += line(sum(ordered[low:high]), high - low)
            if threshold is not None and max(line(ordered[low], 1), line(ordered[high - 1], 1)) >= threshold:
                for at in range(low, high):
                    tokens = round(line(ordered[at], 1))
                    if tokens >= threshold:
                        large[members[at]] = tokens
        for index in counted:  # counted requests: their count, not the line through them
            total += counts[index] - _tokens_at(xs, ys, sizes[index])
            if threshold is not None:
                large.pop(index, None)
                if counts[index] >= threshold:
                    large[index] = counts[index]
        tokens_by_model[number] = max(len(members), round(total))
    return TokenEstimate(tokens_by_model, large)


def uncounted_near(
    large: Mapping[int, int], counts: Mapping[int, int], model_of: Sequence[int], edges: Mapping[int, float]
) -> list[int]:
    """The requests estimated at or past their model's window edge that were not counted, largest first:
    an estimate is not enough to refuse a request, so these are counted before anything is decided.
    """
    near = [
        i for i, t in large.items() if i not in counts and (edge := edges.get(model_of[i])) is not None and t >= edge
    ]
    return sorted(near, key=lambda i: -large[i])


def counting_method(plan: SamplePlan, counted: int, total: int) -> Method:
    """How the input tokens were found: all counted, a sample counted, or none (size-based)."""
    if not counted:
        return "size-based"
    return "counted" if plan.every_request and counted == total else "sampled"


def _segments(ordered: Sequence[int], xs: list[int], ys: list[float]) -> list[tuple[int, int, _Line]]:
    """The runs of `ordered` sizes between consecutive counted sizes, each with its line (tokens of a
    run of `n` requests whose sizes sum to `total`).
    """
    if not xs:
        return [(0, len(ordered), _Line(0.0, 1 / FALLBACK_BYTES_PER_TOKEN))]
    cuts = [bisect_right(ordered, x) for x in xs]
    pieces = [(0, cuts[0], _Line(0.0, ys[0] / xs[0] if xs[0] else 0.0, ys[0] if not xs[0] else 0.0))]
    for k in range(len(xs) - 1):
        slope = (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k])
        pieces.append((cuts[k], cuts[k + 1], _Line(ys[k] - slope * xs[k], slope)))
    pieces.append(
        (cuts[-1], len(ordered), _Line(0.0, ys[-1] / xs[-1] if xs[-1] else 0.0, ys[-1] if not xs[-1] else 0.0))
    )
    return pieces


@dataclass(frozen=True)
class _Line:
    """tokens = intercept + slope * size (at least `floor`), summed over a run of requests."""

    intercept: float
    slope: float
    floor: float = 0.0

    def __call__(self, total_size: float, count: int) -> float:
        return max(self.floor * count, self.intercept * count + self.slope * total_size, float(count))


def _tokens_at(xs: list[int], ys: list[float], size: int) -> float:
    """The line's value at one size (what a counted request was estimated at)."""
    for low, high, line in _segments([size], xs, ys):
        if low < high:
            return line(size, 1)
    return 1.0


def _points(
    counted: Sequence[int], sizes: Sequence[int] | Mapping[int, int], counts: Mapping[int, int]
) -> tuple[list[int], list[float]]:
    """The counted (size, tokens) points of one model, by size (tokens averaged over equal sizes)."""
    by_size: dict[int, list[int]] = {}
    for index in counted:
        by_size.setdefault(sizes[index], []).append(counts[index])
    xs = sorted(by_size)
    return xs, [sum(by_size[x]) / len(by_size[x]) for x in xs]
