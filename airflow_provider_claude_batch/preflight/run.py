"""The preflight stage's I/O shell: free calls (Models API, token counting) before any create.

`run_preflight` looks each distinct model up once, refuses what the API would refuse (one error
naming the lines, nothing submitted), counts input tokens (all of few requests, a stratified sample
of many), checks the context windows, logs the cost estimate, holds it to `max_cost_usd`, and
returns it. The decisions are the pure core's (`checks`, `sample`, `estimate`).
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.preflight.checks import Connection, context_findings, request_findings
from airflow_provider_claude_batch.preflight.estimate import ModelTokens, budget_verdict, estimate_cost
from airflow_provider_claude_batch.preflight.large import LARGE_INPUT, extrapolate_in_one_pass, plan_large_sample
from airflow_provider_claude_batch.preflight.sample import counting_method, extrapolate, plan_sample, uncounted_near
from airflow_provider_claude_batch.results.pricing import DEFAULT_PRICES, price_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.preflight.checks import Findings
    from airflow_provider_claude_batch.preflight.estimate import CostEstimate
    from airflow_provider_claude_batch.preflight.models import ModelInfo
    from airflow_provider_claude_batch.preflight.sample import SamplePlan, TokenEstimate
    from airflow_provider_claude_batch.requests.prepare import PreparedRequests
    from airflow_provider_claude_batch.results.pricing import ModelPrice

log = logging.getLogger(__name__)
# What the counting endpoint takes of a request's params; the rest (max_tokens, stop_sequences,
# sampling, metadata, ...) gets a 400 there and changes no input token.
COUNTED_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config", "cache_control")
RATE_LIMIT_WAIT_BUDGET = 60.0  # seconds of retry-after waits before counting is taken as unavailable
FAILED_CALLS_ALLOWED = 3  # server or network errors in a row before counting is taken as unavailable
COUNT_CONCURRENCY = 8  # counting calls in flight at once (each waits out its own 429s)
WINDOW_EDGE = 0.9  # requests estimated at this share of their model's context window are counted too
EDGE_COUNTS = 20  # at most this many such extra counts


@dataclass
class TokenCounter:
    """Counting calls with the rate limit honoured: waits out each 429's retry-after (within a budget);
    after that, or a run of server errors, counting is unavailable and the estimate falls back to size.
    Used from a few threads at once (`count_all`): the shared tallies change under a lock.
    """

    hook: ClaudeBatchHook
    sleep: Callable[[float], None] = time.sleep
    unavailable: str = ""  # why, once it is
    calls: int = 0
    waited: float = 0.0
    refused: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_all(self, prepared: PreparedRequests, indexes: Sequence[int]) -> dict[int, int]:
        """The counts of these requests, `COUNT_CONCURRENCY` calls in flight (a few dozen calls, not minutes)."""
        from concurrent.futures import ThreadPoolExecutor

        if not indexes:
            return {}
        bodies = [counting_body(prepared, i) for i in indexes]
        with ThreadPoolExecutor(min(COUNT_CONCURRENCY, len(indexes)), thread_name_prefix="count-tokens") as pool:
            found = list(pool.map(self.count, indexes, bodies))
        return {i: n for i, n in zip(indexes, found, strict=True) if n is not None}

    def count(self, index: int, body: Mapping[str, Any]) -> int | None:
        """Request `index`'s input tokens; None when counting is (or just became) unavailable, or the
        endpoint refused the request (noted in `refused`: the API would refuse it in the batch too).
        """
        import anthropic

        from airflow_provider_claude_batch.hooks.api_errors import retry_after

        failures = 0
        while not self.unavailable:
            with self._lock:
                self.calls += 1
            try:
                return self.hook.count_tokens(body)
            except anthropic.RateLimitError as exc:
                wait = retry_after(exc) or 1.0
                with self._lock:
                    if self.waited + wait > RATE_LIMIT_WAIT_BUDGET:
                        self.unavailable = f"rate limited for more than {RATE_LIMIT_WAIT_BUDGET:.0f} s"
                        return None
                    self.waited += wait
                log.info("Token counting is rate limited; waiting %.0f s as the API asks (retry-after)", wait)
                self.sleep(wait)
            except anthropic.BadRequestError as exc:
                with self._lock:
                    self.refused[index] = f"the token-counting endpoint refused it: {exc.api_message}"
                return None
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                failures += 1
                status = getattr(exc, "status_code", None)
                if (status is not None and status < 500) or failures >= FAILED_CALLS_ALLOWED:
                    with self._lock:
                        self.unavailable = self.unavailable or self.hook.describe_error(exc)
                    return None
                self.sleep(retry_after(exc) or float(failures))
        return None


def run_preflight(
    hook: ClaudeBatchHook,
    prepared: PreparedRequests,
    *,
    max_cost_usd: float | None = None,
    prices: Mapping[str, ModelPrice] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    standard_price: bool = False,
) -> CostEstimate:
    """Check `prepared` with free calls, then return its cost estimate; raises before any create when
    the API would refuse requests (`PreflightRefusedError`) or the estimate is over the budget (held at
    the standard price with `standard_price`: every request goes through the Messages API).
    """
    facts = prepared.facts
    version, betas = hook.request_headers()
    infos, unchecked = _model_infos(hook, facts.models)
    known = [*DEFAULT_PRICES, *(i.id for i in infos.values() if i is not None)]
    findings = request_findings(facts, infos, Connection(version, betas), known, unchecked=unchecked)
    for warning in findings.warnings:
        log.warning("%s", warning)
    _raise_for(findings, prepared)

    sizes = _Sizes(prepared)
    plan = sizes.plan(facts.model_index)
    counter = TokenCounter(hook, sleep)
    counts = counter.count_all(prepared, plan.counted)
    windows = {n: info.max_input_tokens for n, m in enumerate(facts.models) if (info := infos.get(m)) is not None}
    edges = {n: w * WINDOW_EDGE for n, w in windows.items() if w is not None}
    bands = {
        n: threshold
        for n, m in enumerate(facts.models)
        if (price := price_for(m, prices or DEFAULT_PRICES)) is not None
        and (threshold := price.long_prompt_threshold) is not None
    }
    large_from = {n: min(t for t in (edges.get(n), bands.get(n)) if t is not None) for n in edges.keys() | bands.keys()}
    tokens = sizes.extrapolate(plan, counts, large_from)
    near_edge = uncounted_near(tokens.large, counts, facts.model_index, edges)
    counts.update(counter.count_all(prepared, near_edge[:EDGE_COUNTS]))
    if len(near_edge) > EDGE_COUNTS and not counter.unavailable:
        log.warning(
            "%d requests are estimated near their model's context window; the %d largest were counted, the "
            "others may still be refused by the API",
            len(near_edge),
            EDGE_COUNTS,
        )
    for index, reason in counter.refused.items():
        findings.add(index, reason)
    context_findings(findings, counts, facts, infos)
    _raise_for(findings, prepared)
    if near_edge:
        tokens = sizes.extrapolate(plan, counts, large_from)

    if counter.unavailable:
        log.warning("Token counting is unavailable (%s): the estimate is size-based", counter.unavailable)
    method = counting_method(plan, len(counts), len(prepared))
    per_model = _model_tokens(prepared, tokens.tokens_by_model, tokens.large, bands)
    note = f"token counting unavailable: {counter.unavailable}" if counter.unavailable else ""
    estimate = estimate_cost(per_model, method, len(counts), note=note, prices=prices)
    log.info("%s; %d model lookup(s), %d token-counting call(s)", estimate.describe(), len(infos), counter.calls)
    if max_cost_usd is not None:
        _hold_to_budget(estimate, max_cost_usd, standard_price=standard_price)
    return estimate


def check_canary(hook: ClaudeBatchHook, batch_id: str, prepared: PreparedRequests, canary_size: int) -> None:
    """Read the ended canary's results; raise `CanaryFailedError` (naming lines) if any failed for its own reasons."""
    from airflow_provider_claude_batch.exceptions import CanaryFailedError
    from airflow_provider_claude_batch.preflight.canary import canary_failures, canary_message

    failures, seen = canary_failures(hook.iter_result_lines(batch_id))
    if failures:
        lines = {cid: prepared.facts.lines[i] for i, cid in enumerate(prepared.custom_ids[:canary_size])}
        rest = len(prepared) - canary_size
        raise CanaryFailedError(canary_message(failures, canary_size, rest, batch_id, lines), [batch_id])
    log.info(
        "The canary batch %s passed (%d results, none failed for its own reasons); submitting the rest", batch_id, seen
    )


def counting_body(prepared: PreparedRequests, index: int) -> dict[str, Any]:
    """What the counting endpoint is sent for request `index`: its params' counted fields."""
    item = msgspec.json.decode(prepared.item(index))
    params = item["params"]
    return {name: params[name] for name in COUNTED_FIELDS if name in params}


class _Sizes:
    """Each request's size as sent, for the sample and the estimate: an array (8 bytes each) of an input of
    up to `LARGE_INPUT` requests; a larger one's are read from its offsets in one pass each (preflight/large.py).
    """

    def __init__(self, prepared: PreparedRequests) -> None:
        self.prepared = prepared
        self.held = array("Q", self._each()) if len(prepared) <= LARGE_INPUT else None

    def _each(self) -> Iterator[int]:
        return map(operator.sub, self.prepared.ends, self.prepared.starts)

    def plan(self, model_of: Sequence[int]) -> SamplePlan:
        if self.held is not None:
            return plan_sample(self.held, model_of)
        return plan_large_sample(self._each(), model_of, len(self.prepared))

    def extrapolate(
        self, plan: SamplePlan, counts: Mapping[int, int], large_from: Mapping[int, float]
    ) -> TokenEstimate:
        if self.held is not None:
            return extrapolate(plan, self.held, counts, large_from)
        ends, starts = self.prepared.ends, self.prepared.starts
        counted_sizes = {index: ends[index] - starts[index] for index in counts}
        return extrapolate_in_one_pass(plan, self._each(), counts, counted_sizes, large_from)


def _model_infos(hook: ClaudeBatchHook, models: list[str]) -> tuple[dict[str, ModelInfo | None], set[str]]:
    """Each distinct model looked up once; a lookup that fails for the API's reasons leaves it unchecked."""
    infos: dict[str, ModelInfo | None] = {}
    unchecked: set[str] = set()
    for model in models:
        try:
            infos[model] = hook.get_model_info(model)
        except ValueError:  # not shaped like a model ID: no model the API knows
            infos[model] = None
        except Exception as exc:
            log.warning("Could not look %s up in the Models API (%s); its checks are skipped", model, exc)
            unchecked.add(model)
    return infos, unchecked


def _model_tokens(
    prepared: PreparedRequests, by_model: Mapping[int, int], large: Mapping[int, int], bands: Mapping[int, int]
) -> dict[str, ModelTokens]:
    """Per model: requests, input tokens, the output their max_tokens allow, and the long-prompt band's share."""
    facts = prepared.facts
    per_model = {model: ModelTokens() for model in facts.models}
    if len(facts.models) == 1:
        only = per_model[facts.models[0]]
        only.requests, only.max_output_tokens = len(facts), sum(facts.max_tokens)
    else:
        for number, max_tokens in zip(facts.model_index, facts.max_tokens, strict=True):
            each = per_model[facts.models[number]]
            each.requests += 1
            each.max_output_tokens += max_tokens
    for number, tokens in by_model.items():
        per_model[facts.models[number]].input_tokens = tokens
    for index, tokens in large.items():
        number = facts.model_index[index]
        band = bands.get(number)
        if band is not None and tokens > band:
            each = per_model[facts.models[number]]
            each.long_prompt_input_tokens += tokens
            each.long_prompt_max_output_tokens += facts.max_tokens[index]
    return per_model


def _raise_for(findings: Findings, prepared: PreparedRequests) -> None:
    from airflow_provider_claude_batch.exceptions import PreflightRefusedError

    if findings.reasons:
        problems, bad = findings.problems(prepared.facts, prepared.custom_ids)
        raise PreflightRefusedError([str(p) for p in problems], bad, len(prepared))


def _hold_to_budget(estimate: CostEstimate, max_cost_usd: float, *, standard_price: bool) -> None:
    from airflow_provider_claude_batch.exceptions import BudgetExceededError

    verdict = budget_verdict(estimate, max_cost_usd, standard_price=standard_price)
    if verdict is None:
        log.info("The estimate fits max_cost_usd=$%g", max_cost_usd)
        return
    kind, message = verdict
    if kind == "refuse":
        raise BudgetExceededError(message)
    log.warning("%s", message)


__all__ = ["TokenCounter", "check_canary", "counting_body", "run_preflight"]
