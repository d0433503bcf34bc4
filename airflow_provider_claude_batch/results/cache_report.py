"""What prompt caching did and saved, per model and in total: the manifest's `caching`. Pure.

Dollars three ways from the same tokens: what was paid (batch price, or the standard price for a
round sent through the Messages API, cache writes and reads at their multipliers, plus the warm-up
calls at the standard price), what the same input would have cost in a batch without caching (every
cached token at the base input price), and at the standard price without caching; `saved_usd` is
against the same route without caching (`without_caching_usd`). The hit rate is requests that read
the cache over requests that could (those that read or wrote it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.results.pricing import (
    BATCH_DISCOUNT,
    DEFAULT_PRICES,
    ModelPrice,
    Usage,
    price_for,
    standard_cost,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

Json = dict[str, Any]
_COUNTS = ("cache_write_tokens", "cache_read_tokens", "requests_reading", "requests_caching")
_DOLLARS = (
    "paid_usd",
    "warmup_usd",
    "batch_without_caching_usd",
    "standard_without_caching_usd",
    "without_caching_usd",
)


def caching_report(
    usage_by_model: Mapping[str, Usage],
    prices: Mapping[str, ModelPrice] | None = None,
    warmup: Mapping[str, Any] | None = None,
    *,
    standard_price: bool = False,
) -> Json:
    """The `caching` section of a landing's manifest; `warmup` is the submission record's;
    `standard_price`: the usage was billed at the standard price (a Messages API round).
    """
    table = prices or DEFAULT_PRICES
    warm_usage = {m: Usage(**counts) for m, counts in (warmup or {}).get("usage_by_model", {}).items()}
    by_model: dict[str, Json] = {}
    for model in sorted({*usage_by_model, *warm_usage}):
        usage = usage_by_model.get(model, Usage())
        price = price_for(model, table)
        row: Json = {
            "cache_write_tokens": usage.cache_write_5m_tokens + usage.cache_write_1h_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "requests_reading": usage.cache_read_requests,
            "requests_caching": usage.cache_requests,
        }
        if price is not None:
            warm = standard_cost(warm_usage[model], price) if model in warm_usage else 0.0
            uncached = standard_cost(_without_caching(usage), price)
            factor = 1.0 if standard_price else BATCH_DISCOUNT
            row |= {
                "paid_usd": standard_cost(usage, price) * factor + warm,
                "warmup_usd": warm,
                "batch_without_caching_usd": uncached * BATCH_DISCOUNT,
                "standard_without_caching_usd": uncached,
                "without_caching_usd": uncached * factor,
            }
        by_model[model] = row
    summary = {k: v for k, v in (warmup or {}).items() if k != "usage_by_model"}
    return finish_caching(by_model, summary or None)


def merge_caching(sections: list[Json]) -> Json:
    """One `caching` section over resubmission rounds: counts and dollars summed (the warm-up is round 0's)."""
    by_model: dict[str, Json] = {}
    for section in sections:
        for model, row in section.get("by_model", {}).items():
            into = by_model.setdefault(model, {})
            for name in (*_COUNTS, *_DOLLARS):
                if name in row:
                    into[name] = into.get(name, 0) + row[name]
    return finish_caching(by_model, next((s["warmup"] for s in sections if s.get("warmup")), None))


def finish_caching(by_model: dict[str, Json], warmup: Json | None) -> Json:
    """Hit rates, rounded dollars and the total over models."""
    total: Json = dict.fromkeys(_COUNTS, 0)
    priced = all("paid_usd" in row for row in by_model.values())
    for row in by_model.values():
        if "batch_without_caching_usd" in row:  # a round landed before rows said which route's price
            row.setdefault("without_caching_usd", row["batch_without_caching_usd"])
        for name in _COUNTS:
            total[name] += row[name]
        row["hit_rate"] = _rate(row)
        for name in _DOLLARS:
            if name in row:
                total[name] = total.get(name, 0.0) + row[name]
                row[name] = round(row[name], 6)
    total["hit_rate"] = _rate(total)
    for name in _DOLLARS:
        total[name] = round(total.get(name, 0.0), 6)
    total["saved_usd"] = round(total["without_caching_usd"] - total["paid_usd"], 6)
    total["complete"] = priced
    return {"by_model": by_model, "total": total, "warmup": warmup}


def _rate(row: Mapping[str, Any]) -> float | None:
    could = row["requests_caching"]
    return round(row["requests_reading"] / could, 4) if could else None


def _without_caching(usage: Usage) -> Usage:
    """The same tokens with every cached one at the base input price."""
    cached = usage.cache_write_5m_tokens + usage.cache_write_1h_tokens + usage.cache_read_tokens
    return Usage(
        requests=usage.requests,
        input_tokens=usage.input_tokens + cached,
        output_tokens=usage.output_tokens,
        long_prompt_input_tokens=usage.long_prompt_input_tokens,
        long_prompt_output_tokens=usage.long_prompt_output_tokens,
    )
