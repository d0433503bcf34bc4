"""Token usage to dollars, at batch price and at the standard price it saves against.

Standard $ per million tokens; the Message Batches API bills 50% of standard for every kind of token;
cache writes cost 1.25x (5 minutes) or 2x (1 hour) the input price, cache reads 0.1x except where a
model's row says otherwise. Prices change: pass `prices=` (or `price_overrides` on the operator) to
override; a model the table does not name is listed as unpriced (and warned about), never guessed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

# The table below as compiled on this date from the pages in PRICE_SOURCES (the project's API_FACTS
# reference, section 7 prices, section 9 model IDs of anthropic 2.16).
PRICES_AS_OF = "2026-12-02"
PRICES_SOURCE = "https://platform.claude.com/docs/en/about-claude/pricing"
PRICE_SOURCES = {
    "pricing": PRICES_SOURCE,
    "caching": "https://platform.claude.com/docs/en/build-with-claude/prompt-caching",
    "model page": "https://platform.claude.com/docs/en/models/{model}/overview",
}
BATCH_DISCOUNT = 0.5
CACHE_WRITE_5M = 1.25
CACHE_WRITE_1H = 2.0
CACHE_READ = 0.1
PER_TOKEN = 1e-6


@dataclass(frozen=True)
class ModelPrice:
    """Standard (not batch) $ per million tokens."""

    input: float
    output: float
    cache_read_multiplier: float = CACHE_READ
    # Haiku 5.5 bills a dearer band when the prompt is over 100K tokens.
    long_prompt_threshold: int | None = None
    long_prompt_input: float | None = None
    long_prompt_output: float | None = None


_OPUS_4 = ModelPrice(5, 25)
_FABLE_5 = ModelPrice(10, 50)
_FABLE_5_1 = ModelPrice(10, 50, cache_read_multiplier=0.025)
_OPUS_4_1 = ModelPrice(15, 75)
# Keys are model IDs or aliases; a dated ID (claude-haiku-4-5-20251001) finds its alias's row. Source of
# each row in its comment (keys of PRICE_SOURCES); "unconfirmed" = not on an official page as of PRICES_AS_OF.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    # unconfirmed: a third-party figure; the ID is in the SDK. Read $0.20 = 0.025x, as Fable 5.1.
    "claude-fable-5-2": ModelPrice(8, 40, cache_read_multiplier=0.025),
    "claude-opus-5-5": ModelPrice(4, 20, cache_read_multiplier=0.05),  # model page; caching (0.05x read)
    # model page. A third party reports the read cut to $0.10 (0.05x) from 2026-10-07: unconfirmed, not applied.
    "claude-sonnet-5-5": ModelPrice(2, 10),
    # model page (in/out of both bands). Whether the 100K "prompt" counts cache tokens is unconfirmed (here it
    # does); cache tokens of a long prompt are billed at the short band's rates (the long ones are unconfirmed).
    "claude-haiku-5-5": ModelPrice(
        0.10, 0.50, long_prompt_threshold=100_000, long_prompt_input=0.50, long_prompt_output=2.50
    ),
    "claude-fable-5-1": _FABLE_5_1,  # pricing; caching (0.025x read)
    "claude-mythos-5-1": _FABLE_5_1,  # pricing; caching (0.025x read)
    "claude-fable-5": _FABLE_5,  # pricing
    "claude-mythos-5": _FABLE_5,  # pricing
    "claude-opus-5": _OPUS_4,  # pricing
    "claude-opus-4-8": _OPUS_4,  # pricing
    "claude-opus-4-7": _OPUS_4,  # pricing
    "claude-opus-4-6": _OPUS_4,  # pricing
    "claude-opus-4-5": _OPUS_4,  # pricing
    "claude-sonnet-5": ModelPrice(2, 10),  # pricing
    "claude-sonnet-4-6": ModelPrice(3, 15),  # pricing
    "claude-sonnet-4-5": ModelPrice(3, 15),  # pricing
    "claude-haiku-4-5": ModelPrice(1, 5),  # pricing
    # pricing; retired on the Claude API, still served on Bedrock and Google Cloud.
    "claude-opus-4-1": _OPUS_4_1,
    "claude-opus-4-0": _OPUS_4_1,
    "claude-opus-4": _OPUS_4_1,  # claude-opus-4-20250514, the dated ID behind the claude-opus-4-0 alias
}
# Not priced, so listed as unpriced if they appear: claude-mythos-5-2 and claude-mythos-preview (IDs in the
# SDK, no price found).
_DATE_SUFFIX = re.compile(r"-\d{8}")


@dataclass
class Usage:
    """Token counts of one model, summed over requests."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    long_prompt_input_tokens: int = 0
    long_prompt_output_tokens: int = 0
    # Requests that read the prompt cache, and that touched it at all (read or wrote): the hit rate.
    cache_read_requests: int = 0
    cache_requests: int = 0

    def reported(self) -> dict[str, int]:
        """The counts a manifest reports (the long-prompt shares only price them)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("long_prompt")}

    def add(self, other: Usage) -> None:
        """Count `other`'s tokens into these."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Cost:
    """What the usage cost at the batch price, and would have at the standard price."""

    batch_usd: float = 0.0
    standard_usd: float = 0.0
    unpriced_models: list[str] = field(default_factory=list)

    @property
    def savings_usd(self) -> float:
        """What the batch discount saved."""
        return self.standard_usd - self.batch_usd

    def to_dict(self) -> dict[str, object]:
        """The manifest's `cost`, rounded to a millionth of a dollar, with the price table's date."""
        return {
            "batch_usd": round(self.batch_usd, 6),
            "standard_usd": round(self.standard_usd, 6),
            "savings_usd": round(self.savings_usd, 6),
            "unpriced_models": sorted(self.unpriced_models),
            "prices_as_of": PRICES_AS_OF,
            "prices_source": PRICES_SOURCE,
        }


def price_for(model: str, prices: Mapping[str, ModelPrice] = DEFAULT_PRICES) -> ModelPrice | None:
    """The row of `model`, or of the alias its dated ID extends; None for any other model.

    Only a date suffix falls back to the alias: a newer model sharing a prefix (claude-mythos-5-2 vs
    claude-mythos-5) must come out unpriced, not at its elder's price.
    """
    price = prices.get(model)
    if price is None and _DATE_SUFFIX.fullmatch(model[-9:]):
        price = prices.get(model[:-9])
    return price


def standard_cost(usage: Usage, price: ModelPrice) -> float:
    """What the same tokens cost through the Messages API at standard prices."""
    base_in = usage.input_tokens * price.input
    cached = (
        usage.cache_write_5m_tokens * CACHE_WRITE_5M
        + usage.cache_write_1h_tokens * CACHE_WRITE_1H
        + usage.cache_read_tokens * price.cache_read_multiplier
    ) * price.input
    out = usage.output_tokens * price.output
    if price.long_prompt_input is not None and price.long_prompt_output is not None:
        # Requests over the threshold were counted apart; bill their input and output at the long band.
        base_in += usage.long_prompt_input_tokens * (price.long_prompt_input - price.input)
        out += usage.long_prompt_output_tokens * (price.long_prompt_output - price.output)
    return (base_in + cached + out) * PER_TOKEN


def cost_of(usage_by_model: Mapping[str, Usage], prices: Mapping[str, ModelPrice] = DEFAULT_PRICES) -> Cost:
    """Dollars at batch price and at standard price; models without a price are listed, not guessed."""
    cost = Cost()
    for model, usage in usage_by_model.items():
        price = price_for(model, prices)
        if price is None:
            cost.unpriced_models.append(model)
            continue
        standard = standard_cost(usage, price)
        cost.standard_usd += standard
        cost.batch_usd += standard * BATCH_DISCOUNT
    return cost


def prices_from_overrides(overrides: Mapping[str, Mapping[str, float]] | None) -> dict[str, ModelPrice]:
    """The default table with user entries, e.g. {"claude-sonnet-5-5": {"input": 2, "output": 10}}."""
    from airflow_provider_claude_batch.exceptions import BatchInputError

    table = dict(DEFAULT_PRICES)
    for model, values in (overrides or {}).items():
        try:
            price = ModelPrice(**values)  # type: ignore[arg-type]
        except TypeError as exc:  # a misspelt or missing key
            raise BatchInputError(
                f"price_overrides[{model!r}]: {exc} (keys: input, output, cache_read_multiplier, "
                "long_prompt_threshold, long_prompt_input, long_prompt_output)"
            ) from None
        bad = [
            name
            for name, value in vars(price).items()
            if value is not None
            and not (
                isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
            )
        ]
        if bad:
            raise BatchInputError(
                f"price_overrides[{model!r}]: {', '.join(bad)} must be a number of at least 0 "
                "(dollars per million tokens); a cost is never negative."
            )
        table[model] = price
    return table
