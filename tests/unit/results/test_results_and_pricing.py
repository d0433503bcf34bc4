"""Folding result lines into rows and totals, and pricing them: pure."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from airflow_provider_claude_batch.results.fold import (
    TABLE_COLUMNS,
    MalformedResultError,
    encode_row,
    encode_rows,
    fold_lines,
)
from airflow_provider_claude_batch.results.pricing import (
    Usage,
    cost_of,
    price_for,
    prices_from_overrides,
    standard_cost,
)
from airflow_provider_claude_batch.results.totals import Totals
from tests.helpers import fold_line


def _line(result: dict[str, object], custom_id: str = "c1") -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}).encode()


SUCCEEDED = {
    "type": "succeeded",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-5-5",
        "content": [
            {"type": "thinking", "thinking": "..."},
            {"type": "text", "text": "Hello"},
            {"type": "tool_use", "id": "t", "name": "x", "input": {}},
            {"type": "text", "text": "there"},
        ],
        "stop_reason": "end_turn",
        "future_field": {"anything": 1},
        "usage": {
            "input_tokens": 100,
            "output_tokens": 50,
            "cache_creation_input_tokens": 30,
            "cache_read_input_tokens": 200,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
            "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1},
            "service_tier": "batch",
        },
    },
}


def test_a_succeeded_line_becomes_a_row_with_every_usage_field() -> None:
    totals = Totals()
    folded = fold_line(_line(SUCCEEDED), "msgbatch_1", totals)
    assert not folded.failed
    assert folded.row == {
        "custom_id": "c1",
        "batch_id": "msgbatch_1",
        "result_type": "succeeded",
        "text": "Hello\nthere",
        "stop_reason": "end_turn",
        "model": "claude-sonnet-5-5",
        "message_id": "msg_1",
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 200,
        "cache_write_5m_tokens": 10,
        "cache_write_1h_tokens": 20,
        "web_search_requests": 2,
        "web_fetch_requests": 1,
        "service_tier": "batch",
        "error_type": None,
        "error_message": None,
    }
    usage = totals.usage_by_model["claude-sonnet-5-5"]
    assert (
        usage.requests,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_write_5m_tokens,
        usage.cache_write_1h_tokens,
        usage.cache_read_tokens,
    ) == (1, 100, 50, 10, 20, 200)


def test_errored_lines_read_the_nested_error_type_and_the_flat_one_too() -> None:
    totals = Totals()
    nested = {
        "type": "errored",
        "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}, "request_id": None},
    }
    flat = {"type": "errored", "error": {"type": "invalid_request_error", "message": "bad"}}
    first = fold_line(_line(nested, "a"), "b", totals)
    second = fold_line(_line(flat, "b"), "b", totals)
    assert (first.row["error_type"], first.row["error_message"]) == ("overloaded_error", "busy")
    assert (second.row["error_type"], second.row["error_message"]) == ("invalid_request_error", "bad")
    assert first.failed and second.failed
    assert totals.error_types == {"overloaded_error": 1, "invalid_request_error": 1}


def test_canceled_and_expired_count_as_failed() -> None:
    totals = Totals()
    for kind in ("canceled", "expired"):
        assert fold_line(_line({"type": kind}, kind), "b", totals).failed
    fold_line(_line(SUCCEEDED), "b", totals)
    assert totals.counts == {"succeeded": 1, "errored": 0, "canceled": 1, "expired": 1}
    assert totals.failed == 2 and totals.requests == 3


def test_a_cache_write_without_its_split_counts_at_the_5_minute_rate() -> None:
    line = json.loads(json.dumps(SUCCEEDED))
    del line["message"]["usage"]["cache_creation"]
    totals = Totals()
    row = fold_line(_line(line), "b", totals).row
    assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (30, 0)


def test_every_row_has_the_table_columns_in_order_and_encodes_the_same_one_by_one_or_in_bulk() -> None:
    errored = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": "x"}}}
    rows = [
        fold_line(_line(result, kind), "b", Totals()).row
        for kind, result in (("s", SUCCEEDED), ("e", errored), ("x", {"type": "expired"}))
    ]
    assert all(tuple(row) == TABLE_COLUMNS for row in rows)
    assert encode_rows(rows) == b"".join(encode_row(row) for row in rows)


def test_a_line_that_is_not_the_api_shape_stops_landing() -> None:
    with pytest.raises(MalformedResultError, match="msgbatch_9"):
        fold_line(b'{"custom_id": "x"}', "msgbatch_9", Totals())


ERRORED = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error", "message": 'x \u00e9 "y"'}}}
ONE_BLOCK = {
    "type": "succeeded",
    "message": {
        "id": "msg_2",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": 'multi\nline \u2603 \\ "q"'}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 120_000, "output_tokens": 3},
    },
}
MIXED = [
    _line(SUCCEEDED, "s1"),
    _line(ERRORED, "e1"),
    _line({"type": "expired"}, "x1"),
    _line({"type": "canceled"}, "c1"),
    _line(ONE_BLOCK, "s2"),
    _line({"type": "succeeded"}, "s3"),
    _line({"type": "some_future_type"}, "f1"),
    _line({"type": "errored", "error": {"type": "invalid_request_error", "message": "bad"}}, "e2"),
]


def _one_by_one(lines: list[bytes]) -> tuple[list[bytes], list[bytes], Totals]:
    """What landing wrote before blocks: one decode per line, dict rows, each encoded alone."""
    totals = Totals()
    folded = [fold_line(line, "b", totals) for line in lines if line.strip()]
    return ([encode_row(f.row) for f in folded], [encode_row(f.row) for f in folded if f.failed], totals)


def test_a_block_of_lines_folds_to_the_same_bytes_and_totals_as_one_line_at_a_time() -> None:
    rows, failed, expected = _one_by_one(MIXED)
    totals = Totals()
    folded = fold_lines(b"\n".join(MIXED) + b"\n", "b", totals)
    assert encode_rows(folded.rows) == b"".join(rows)
    assert encode_rows(folded.failed) == b"".join(failed)
    assert [row.result_type for row in folded.failed] == ["errored", "expired", "canceled", "errored"]
    assert totals == expected
    assert totals.usage_by_model["claude-haiku-4-5"].long_prompt_input_tokens == 120_000


def _reference_usage(results: list[dict[str, Any]]) -> dict[str, Usage]:
    """Each model's usage summed straight from the results' JSON: the meaning of the fold's sums."""
    by_model: dict[str, Usage] = {}
    for result in results:
        usage = result["message"]["usage"]
        split = usage.get("cache_creation") or {}
        write_5m = split.get("ephemeral_5m_input_tokens", usage.get("cache_creation_input_tokens", 0))
        write_1h = split.get("ephemeral_1h_input_tokens", 0)
        read = usage.get("cache_read_input_tokens", 0)
        if min(usage["input_tokens"], usage["output_tokens"], write_5m, write_1h, read) < 0:
            continue  # flagged, left out of the totals
        total = by_model.setdefault(result["message"]["model"], Usage())
        total.requests += 1
        total.input_tokens += usage["input_tokens"]
        total.output_tokens += usage["output_tokens"]
        total.cache_write_5m_tokens += write_5m
        total.cache_write_1h_tokens += write_1h
        total.cache_read_tokens += read
        total.cache_requests += bool(read or write_5m or write_1h)
        total.cache_read_requests += read > 0
        if usage["input_tokens"] + write_5m + write_1h + read > 100_000:
            total.long_prompt_input_tokens += usage["input_tokens"]
            total.long_prompt_output_tokens += usage["output_tokens"]
    return by_model


def test_usage_summed_over_runs_of_models_equals_summing_each_result_on_its_own() -> None:
    rng = random.Random(7)
    results = []
    for i in range(600):
        usage: dict[str, Any] = {"input_tokens": rng.choice([5, 90_000, 120_000]), "output_tokens": rng.randint(0, 9)}
        if rng.random() < 0.5:
            usage["cache_read_input_tokens"] = rng.choice([0, 4_000])
            usage["cache_creation_input_tokens"] = rng.choice([0, 30])
            if rng.random() < 0.5:
                usage["cache_creation"] = {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}
        if i % 97 == 0:
            usage["output_tokens"] = -1
        model = rng.choice(["claude-sonnet-5-5", "claude-haiku-4-5"]) if i % 50 < 25 else "claude-opus-4-1"
        content = [{"type": "text", "text": f"r{i}"}]
        results.append(
            {"type": "succeeded", "message": {"id": f"m{i}", "model": model, "content": content, "usage": usage}}
        )
    lines = [_line(result, f"c{i}") for i, result in enumerate(results)]
    lines.insert(300, _line(ERRORED, "e1"))
    for block_lines in (1, 7, len(lines)):
        totals = Totals()
        for start in range(0, len(lines), block_lines):
            fold_lines(b"\n".join(lines[start : start + block_lines]), "b", totals)
        assert totals.usage_by_model == _reference_usage(results)
        assert totals.counts["succeeded"] == 600 and totals.counts["errored"] == 1
        assert totals.problems == {"negative_usage": 7}


def test_blank_lines_crlf_and_a_last_line_without_newline_fold_like_before() -> None:
    block = b"\n" + MIXED[0] + b"\r\n  \n" + MIXED[1] + b"\n\n" + MIXED[2]
    rows, failed, expected = _one_by_one(block.split(b"\n"))
    totals = Totals()
    folded = fold_lines(block, "b", totals)
    assert encode_rows(folded.rows) == b"".join(rows) and len(folded.rows) == 3
    assert encode_rows(folded.failed) == b"".join(failed)
    assert totals == expected


@pytest.mark.parametrize(
    "block",
    [
        MIXED[0] + b" " + MIXED[1] + b"\n",  # two results on one line
        MIXED[0].replace(b", ", b",\n", 1) + b"\n",  # one result over two lines
        MIXED[0] + b"\n" + b'{"custom_id": "x"}\n',  # not the API's shape
        MIXED[0] + b"\n" + MIXED[1][:-5] + b"\n",  # cut short
    ],
)
def test_a_block_with_a_line_that_is_not_one_result_stops_landing(block: bytes) -> None:
    with pytest.raises(MalformedResultError, match="a result line of batch msgbatch_9 is not valid"):
        fold_lines(block, "msgbatch_9", Totals())


def test_batch_cost_is_half_the_standard_cost_with_cache_multipliers() -> None:
    usage = Usage(
        requests=1,
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_write_5m_tokens=1_000_000,
        cache_write_1h_tokens=1_000_000,
        cache_read_tokens=1_000_000,
    )
    price = price_for("claude-sonnet-4-5")
    assert price is not None
    # $3 in + $15 out + 1.25 x 3 + 2 x 3 + 0.1 x 3 = 28.05 standard
    assert standard_cost(usage, price) == pytest.approx(28.05)
    cost = cost_of({"claude-sonnet-4-5": usage})
    assert cost.batch_usd == pytest.approx(14.025)
    assert cost.savings_usd == pytest.approx(14.025)


def test_special_cache_read_rates_and_long_prompt_bands() -> None:
    opus = price_for("claude-opus-5-5")
    assert opus is not None and opus.cache_read_multiplier == 0.05
    for model in ("claude-fable-5-1", "claude-mythos-5-1", "claude-fable-5-2"):  # read at $0.25 / $0.20 per M
        price = price_for(model)
        assert price is not None and price.cache_read_multiplier == 0.025, model
    fable_5 = price_for("claude-fable-5")
    assert fable_5 is not None and fable_5.cache_read_multiplier == 0.1
    # 1M cache-read tokens on Fable 5.1: 0.025 x $10 = $0.25 standard, $0.125 in a batch.
    assert cost_of({"claude-fable-5-1": Usage(cache_read_tokens=1_000_000)}).batch_usd == pytest.approx(0.125)
    haiku = price_for("claude-haiku-5-5")
    assert haiku is not None
    short = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    long = Usage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        long_prompt_input_tokens=1_000_000,
        long_prompt_output_tokens=1_000_000,
    )
    assert standard_cost(short, haiku) == pytest.approx(0.60)
    assert standard_cost(long, haiku) == pytest.approx(3.00)


def test_dated_model_ids_find_their_family_and_unknown_models_are_listed_not_guessed() -> None:
    assert price_for("claude-haiku-4-5-20251001") == price_for("claude-haiku-4-5")
    assert price_for("claude-opus-5-5") != price_for("claude-opus-5")  # the longest prefix wins
    cost = cost_of({"claude-unknown-9": Usage(input_tokens=10), "claude-haiku-4-5": Usage(input_tokens=1_000_000)})
    assert cost.unpriced_models == ["claude-unknown-9"]
    assert cost.batch_usd == pytest.approx(0.5)


def test_a_newer_model_sharing_a_prefix_is_unpriced_not_billed_as_its_elder() -> None:
    assert price_for("claude-mythos-5-2") is None  # not claude-mythos-5's price
    assert price_for("claude-opus-5-6") is None
    assert price_for("claude-mythos-preview") is None
    assert price_for("claude-opus-4-20250514") == price_for("claude-opus-4-0")  # Opus 4's dated ID
    assert price_for("claude-sonnet-4-5-20250929") == price_for("claude-sonnet-4-5")
    cost = cost_of({"claude-mythos-5-2": Usage(input_tokens=1_000_000)})
    assert cost.unpriced_models == ["claude-mythos-5-2"] and cost.batch_usd == 0


def test_every_model_id_of_the_installed_sdk_is_priced_or_known_to_be_unpriced() -> None:
    """A new SDK naming new models fails here until the table (or the unpriced list) names them."""
    import typing

    from anthropic.types import Model

    sdk_ids = {v for arg in typing.get_args(Model) for v in typing.get_args(arg)}
    assert "claude-opus-5-5" in sdk_ids  # the literal was read
    unpriced = {m for m in sdk_ids if price_for(m) is None}
    assert unpriced <= {"claude-mythos-5-2", "claude-mythos-preview"}


def test_price_overrides_replace_or_add_models() -> None:
    table = prices_from_overrides(
        {"claude-sonnet-5-5": {"input": 1, "output": 2}, "my-model": {"input": 4, "output": 8}}
    )
    cost = cost_of({"my-model": Usage(input_tokens=1_000_000)}, table)
    assert cost.standard_usd == pytest.approx(4) and cost.batch_usd == pytest.approx(2)
