"""The manifest's `caching`: hit rate, tokens, and dollars paid vs a batch and the standard price without caching."""

from __future__ import annotations

import json

import pytest

from airflow_provider_claude_batch.results.cache_report import caching_report, merge_caching
from airflow_provider_claude_batch.results.fold import fold_lines
from airflow_provider_claude_batch.results.pricing import Usage
from airflow_provider_claude_batch.results.totals import Totals


def _line(custom_id: str, read: int, write_1h: int, input_tokens: int = 100) -> bytes:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": 10,
        "cache_creation_input_tokens": write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": write_1h},
    }
    message = {"id": "m", "model": "claude-sonnet-4-6", "content": [], "usage": usage}
    return json.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}).encode()


def test_rows_carry_cache_tokens_and_the_hit_rate_counts_requests_that_read_over_those_that_could() -> None:
    totals = Totals()
    lines = [_line("w", 0, 3000), _line("r1", 3000, 0), _line("r2", 3000, 0), _line("none", 0, 0)]
    rows = fold_lines(b"\n".join(lines), "b", totals).rows
    assert [(r.cache_read_input_tokens, r.cache_write_1h_tokens) for r in rows] == [
        (0, 3000),
        (3000, 0),
        (3000, 0),
        (0, 0),
    ]
    usage = totals.usage_by_model["claude-sonnet-4-6"]
    assert (usage.cache_read_requests, usage.cache_requests) == (2, 3)
    report = caching_report(totals.usage_by_model)
    row = report["by_model"]["claude-sonnet-4-6"]
    assert row["hit_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert (row["cache_read_tokens"], row["cache_write_tokens"]) == (6000, 3000)
    # $3 / MTok input, $15 output; batch = half. Input 400 + 9,000 cached, output 40.
    standard_uncached = (9400 * 3 + 40 * 15) / 1e6
    assert row["standard_without_caching_usd"] == pytest.approx(standard_uncached)
    assert row["batch_without_caching_usd"] == pytest.approx(standard_uncached / 2)
    paid = (400 * 3 + 3000 * 3 * 2 + 6000 * 3 * 0.1 + 40 * 15) / 1e6 / 2
    assert row["paid_usd"] == pytest.approx(paid)
    assert report["total"]["saved_usd"] == pytest.approx(standard_uncached / 2 - paid, abs=1e-6)


def test_the_warmup_is_paid_at_the_standard_price_and_counted_once_over_rounds() -> None:
    usage = {
        "claude-sonnet-4-6": Usage(
            requests=10, input_tokens=100, cache_read_tokens=30000, cache_read_requests=10, cache_requests=10
        )
    }
    warm = {
        "requests": 1,
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 3000,
        "cache_read_tokens": 0,
    }
    warmup = {"calls": 1, "failed": 0, "usage_by_model": {"claude-sonnet-4-6": warm}}
    report = caching_report(usage, warmup=warmup)
    warm_usd = (1 * 3 + 3000 * 3 * 2 + 1 * 15) / 1e6
    assert report["total"]["warmup_usd"] == pytest.approx(warm_usd)
    assert report["warmup"] == {"calls": 1, "failed": 0}
    assert report["by_model"]["claude-sonnet-4-6"]["hit_rate"] == 1.0
    merged = merge_caching([report, caching_report(usage)])
    assert merged["total"]["warmup_usd"] == pytest.approx(warm_usd)
    assert merged["total"]["requests_reading"] == 20
    assert merged["total"]["paid_usd"] == pytest.approx(2 * report["total"]["paid_usd"] - warm_usd, abs=1e-6)


def test_an_unpriced_model_is_counted_without_dollars() -> None:
    report = caching_report({"claude-unknown-9": Usage(cache_read_tokens=5, cache_read_requests=1, cache_requests=1)})
    assert "paid_usd" not in report["by_model"]["claude-unknown-9"]
    assert report["total"]["complete"] is False and report["total"]["requests_reading"] == 1


def test_the_log_says_what_caching_saved_and_stays_quiet_without_caching() -> None:
    from airflow_provider_claude_batch.output.landing import report_caching

    class Log:
        lines: list[str] = []

        def info(self, msg: str, *args: object) -> None:
            self.lines.append(msg % args)

        def warning(self, msg: str, *args: object) -> None:
            self.lines.append(msg % args)

    log = Log()
    usage = {
        "claude-sonnet-4-6": Usage(
            requests=2,
            input_tokens=10,
            cache_read_tokens=3000,
            cache_read_requests=1,
            cache_requests=2,
            cache_write_1h_tokens=3000,
        )
    }
    report_caching(log, caching_report(usage))
    (line,) = log.lines
    assert "1 of 2 requests read the cache (hit rate 50%)" in line and "caching saved $" in line
    report_caching(log, caching_report({"claude-sonnet-4-6": Usage(requests=2, input_tokens=10)}))
    assert len(log.lines) == 1
