"""What a submission will cost, before it is paid for, and whether that fits a budget. Pure.

Input tokens (counted, sampled or size-based) and each request's max_tokens in; dollars out, priced by
`results/pricing.py`'s dated table like the manifest's actual cost: a range at batch price, from every
output empty to every request writing its max_tokens, beside the same range at standard price.
Prompt caching is not foreseen: cache reads make a run cheaper than the low figure, cache writes
dearer (up to 2x the input price for a 1-hour write).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_claude_batch.results.pricing import DEFAULT_PRICES, PRICES_AS_OF, Usage, cost_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_provider_claude_batch.results.pricing import ModelPrice

Method = Literal["counted", "sampled", "size-based"]
METHOD_TEXT = {
    "counted": "every request counted with the token-counting endpoint",
    "sampled": "a sample counted with the token-counting endpoint, the rest estimated by size",
    "size-based": "estimated from the requests' size (token counting unavailable)",
}


@dataclass
class ModelTokens:
    """One model's requests: how many, their input tokens, and the output their max_tokens allow."""

    requests: int = 0
    input_tokens: int = 0
    max_output_tokens: int = 0
    long_prompt_input_tokens: int = 0  # of requests over the model's long-prompt band (priced apart)
    long_prompt_max_output_tokens: int = 0


@dataclass(frozen=True)
class CostEstimate:
    """The estimate logged before the first create, kept in the submission record and the manifest."""

    requests: int
    input_tokens: int
    max_output_tokens: int
    method: Method
    counted_requests: int
    batch_usd_low: float
    batch_usd_high: float
    standard_usd_low: float
    standard_usd_high: float
    unpriced_models: list[str] = field(default_factory=list)
    note: str = ""
    prices_as_of: str = PRICES_AS_OF

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (dollars rounded to a millionth), as the record and the manifest keep them."""
        values = asdict(self)
        for name in ("batch_usd_low", "batch_usd_high", "standard_usd_low", "standard_usd_high"):
            values[name] = round(values[name], 6)
        return values

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CostEstimate:
        """The estimate `to_dict` wrote (unknown keys ignored, so an older reader takes a newer one)."""
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """One log line: tokens, how they were found, and both price ranges."""
        unpriced = f"; no price for {', '.join(self.unpriced_models)}" if self.unpriced_models else ""
        note = f" ({self.note})" if self.note else ""
        return (
            f"Estimate for {self.requests} requests: {self.input_tokens} input tokens "
            f"({METHOD_TEXT[self.method]}{note}); ${self.batch_usd_low:.4f} at batch price with no output, up to "
            f"${self.batch_usd_high:.4f} if every request writes its max_tokens ({self.max_output_tokens} output "
            f"tokens); ${self.standard_usd_low:.4f} to ${self.standard_usd_high:.4f} at standard price "
            f"(prices as of {self.prices_as_of}{unpriced})"
        )


def estimate_cost(
    tokens: Mapping[str, ModelTokens],
    method: Method,
    counted_requests: int,
    *,
    note: str = "",
    prices: Mapping[str, ModelPrice] | None = None,
) -> CostEstimate:
    """The dollar range for these tokens, at batch and at standard price."""
    low: dict[str, Usage] = {}
    high: dict[str, Usage] = {}
    for model, t in tokens.items():
        shared = {
            "requests": t.requests,
            "input_tokens": t.input_tokens,
            "long_prompt_input_tokens": t.long_prompt_input_tokens,
        }
        low[model] = Usage(**shared)
        high[model] = Usage(
            **shared,
            output_tokens=t.max_output_tokens,
            long_prompt_output_tokens=t.long_prompt_max_output_tokens,
        )
    table = prices or DEFAULT_PRICES
    at_low, at_high = cost_of(low, table), cost_of(high, table)
    return CostEstimate(
        requests=sum(t.requests for t in tokens.values()),
        input_tokens=sum(t.input_tokens for t in tokens.values()),
        max_output_tokens=sum(t.max_output_tokens for t in tokens.values()),
        method=method,
        counted_requests=counted_requests,
        batch_usd_low=at_low.batch_usd,
        batch_usd_high=at_high.batch_usd,
        standard_usd_low=at_low.standard_usd,
        standard_usd_high=at_high.standard_usd,
        unpriced_models=sorted(at_low.unpriced_models),
        note=note,
    )


BudgetVerdict = Literal["refuse", "warn"]


def budget_verdict(
    estimate: CostEstimate, max_cost_usd: float, *, standard_price: bool = False
) -> tuple[BudgetVerdict, str] | None:
    """Whether the estimate fits `max_cost_usd` at the price the route pays (batch; the standard price when
    every request goes through the Messages API): refused when even its low figure is over (or cannot be
    priced), a warning when only its high figure is; None when it fits.
    """
    cap = f"max_cost_usd=${max_cost_usd:g}"
    if standard_price:
        low, high, price = estimate.standard_usd_low, estimate.standard_usd_high, "standard price (route='sync')"
    else:
        low, high, price = estimate.batch_usd_low, estimate.batch_usd_high, "batch price"
    span = f"${low:.4f} (no output) to ${high:.4f} (every max_tokens written)"
    if estimate.unpriced_models:
        return "refuse", (
            f"{cap} cannot be held: the price table (as of {estimate.prices_as_of}) has no price for "
            f"{', '.join(estimate.unpriced_models)}. Give their prices (price_overrides in the LandingPolicy "
            "of ClaudeBatchOperator), or leave max_cost_usd unset. Nothing was submitted."
        )
    if low > max_cost_usd:
        return "refuse", (
            f"The estimated cost is over {cap}: {span} at {price}, for {estimate.input_tokens} input tokens "
            f"in {estimate.requests} requests. Raise max_cost_usd, submit fewer or shorter requests, or choose a "
            "cheaper model. Nothing was submitted."
        )
    if high > max_cost_usd:
        return "warn", (
            f"The estimated cost may go over {cap}: {span} at {price}. Submitting anyway (only the low "
            "figure is held to the cap); lower max_tokens to bound the outputs, or raise max_cost_usd."
        )
    return None
