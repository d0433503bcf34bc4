"""The pure checks of landing: one result per submitted custom_id, usage that can be counted, batch
IDs that can name a file, spreadsheet-safe CSV cells, and the emulator's stream-tampering faults."""

from __future__ import annotations

import json

import msgspec
import pytest

from airflow_provider_claude_batch.emulator.faults import UNKNOWN_CUSTOM_ID, Fault, tampered_results
from airflow_provider_claude_batch.output.manifest import result_problems
from airflow_provider_claude_batch.output.tables import spreadsheet_safe
from airflow_provider_claude_batch.requests.plan import BatchPlan
from airflow_provider_claude_batch.results.checks import (
    ExpectedResults,
    SeenIds,
    custom_ids_digest,
    expected_from_record,
    results_mismatch,
    valid_batch_id,
)
from airflow_provider_claude_batch.results.fold import TableRow, fold_lines
from airflow_provider_claude_batch.results.pricing import cost_of
from airflow_provider_claude_batch.results.totals import (
    NEGATIVE_USAGE,
    SUCCEEDED_WITHOUT_USAGE,
    UNKNOWN_RESULT_TYPE,
    Totals,
)
from airflow_provider_claude_batch.submit.record import PartRecord, SubmissionRecord, TaskKey

IDS = [f"r{i}" for i in range(10)]


def _seen(*blocks: list[str]) -> SeenIds:
    seen = SeenIds()
    for block in blocks:
        seen.add([TableRow(c, "msgbatch_x", "succeeded") for c in block])
    return seen


@pytest.mark.parametrize(
    "expected", [ExpectedResults(10), ExpectedResults(10, custom_ids_digest(IDS)), ExpectedResults(10, None, IDS)]
)
def test_exactly_the_submitted_custom_ids_in_any_order_and_blocks_pass(expected: ExpectedResults) -> None:
    assert results_mismatch("msgbatch_x", _seen(IDS[7:], IDS[:3], IDS[3:7]), expected) is None


@pytest.mark.parametrize(
    "expected", [ExpectedResults(10), ExpectedResults(10, custom_ids_digest(IDS)), ExpectedResults(10, None, IDS)]
)
@pytest.mark.parametrize(
    "blocks",
    [
        [[*IDS[:9], "r0"]],  # twice within a block
        [IDS[:5], [*IDS[5:9], "r2"]],  # twice across blocks
    ],
)
def test_a_duplicated_line_in_place_of_a_missing_one_is_named(
    expected: ExpectedResults, blocks: list[list[str]]
) -> None:
    problem = results_mismatch("msgbatch_x", _seen(*blocks), expected)
    assert problem is not None
    assert "msgbatch_x" in problem and "10 requests, 10 results for 9 distinct custom_ids" in problem
    assert "1 duplicated" in problem and ("'r0'" in problem or "'r2'" in problem)
    assert "1 missing" in problem
    if expected.custom_ids is not None:
        assert "'r9'" in problem  # the missing one is named when the input is at hand


def test_a_result_for_an_unknown_custom_id_is_refused_by_the_input_or_the_record() -> None:
    served = _seen([*IDS[:9], "intruder"])
    exact = results_mismatch("msgbatch_x", served, ExpectedResults(10, None, IDS))
    assert exact is not None and "'r9'" in exact and "1 not submitted in this batch (e.g. 'intruder')" in exact
    by_digest = results_mismatch("msgbatch_x", served, ExpectedResults(10, custom_ids_digest(IDS)))
    assert by_digest is not None and "sha256" in by_digest
    # With neither (bare batch IDs), only duplicates and the count can be checked.
    assert results_mismatch("msgbatch_x", served, ExpectedResults(10)) is None


def test_more_or_fewer_distinct_results_than_requests_are_refused_without_a_record() -> None:
    assert "1 missing" in (results_mismatch("msgbatch_x", _seen(IDS[:9]), ExpectedResults(10)) or "")
    assert "1 more custom_ids than requests" in (
        results_mismatch("msgbatch_x", _seen([*IDS, "extra"]), ExpectedResults(10)) or ""
    )


def test_the_digest_is_order_independent_and_separates_ids() -> None:
    assert custom_ids_digest(IDS) == custom_ids_digest(reversed(IDS))
    assert custom_ids_digest(["ab", "c"]) != custom_ids_digest(["a", "bc"])
    assert custom_ids_digest(IDS) != custom_ids_digest(IDS[:9])


@pytest.mark.parametrize(
    "batch_id", ["msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d", "msgbatch_emu_0a1b2c", "msgbatch_" + "a" * 300]
)
def test_batch_ids_of_the_api_and_the_emulator_are_valid(batch_id: str) -> None:
    assert valid_batch_id(batch_id)


@pytest.mark.parametrize(
    "batch_id",
    [
        "msgbatch_../../etc",
        "msgbatch_a/b",
        "msgbatch_a%2fb",
        "msgbatch_a b",
        "msgbatch_a\n",
        "msgbatch_",
        "msgbatch_.x",
        "../msgbatch_a",
        "batch_abc",
        "",
        "msgbatch_a\\b",
        7,
        None,
    ],
)
def test_anything_else_never_names_a_file(batch_id: object) -> None:
    assert not valid_batch_id(batch_id)


def _line(custom_id: str, result: dict[str, object]) -> bytes:
    return json.dumps({"custom_id": custom_id, "result": result}).encode() + b"\n"


def _succeeded(usage: dict[str, object] | None) -> dict[str, object]:
    message: dict[str, object] = {
        "id": "msg_1",
        "model": "claude-sonnet-5-5",
        "content": [{"type": "text", "text": "hi"}],
    }
    if usage is not None:
        message["usage"] = usage
    return {"type": "succeeded", "message": message}


def test_results_whose_usage_cannot_be_counted_are_flagged_never_counted_as_zero_or_negative() -> None:
    block = b"".join(
        [
            _line("ok", _succeeded({"input_tokens": 10, "output_tokens": 5})),
            _line("no-usage", _succeeded(None)),
            _line("no-output", _succeeded({"input_tokens": 10})),
            _line("negative", _succeeded({"input_tokens": -1000, "output_tokens": 5})),
            _line("negative-cache", _succeeded({"input_tokens": 1, "output_tokens": 5, "cache_read_input_tokens": -9})),
            _line("no-message", {"type": "succeeded"}),
            _line("odd", {"type": "deferred_forever"}),
        ]
    )
    totals = Totals()
    folded = fold_lines(block, "msgbatch_x", totals)
    assert [r.custom_id for r in folded.rows] == [
        "ok",
        "no-usage",
        "no-output",
        "negative",
        "negative-cache",
        "no-message",
        "odd",
    ]
    assert totals.counts["succeeded"] == 6 and totals.counts["deferred_forever"] == 1
    usage = totals.usage_by_model["claude-sonnet-5-5"]
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.cache_read_tokens) == (1, 10, 5, 0)
    assert result_problems(totals) == {
        NEGATIVE_USAGE: {"results": 2, "examples": ["negative", "negative-cache"]},
        SUCCEEDED_WITHOUT_USAGE: {"results": 3, "examples": ["no-usage", "no-output", "no-message"]},
        UNKNOWN_RESULT_TYPE: {"results": 1, "examples": ["odd"]},
    }
    assert cost_of(totals.usage_by_model).batch_usd > 0
    # The rows keep what was served (the raw file has it all), never a made-up zero.
    assert folded.rows[1].input_tokens is None and folded.rows[3].input_tokens == -1000
    merged = Totals()
    merged.add(totals)
    merged.add(totals)
    assert merged.problems[NEGATIVE_USAGE] == 4 and len(merged.problem_examples[SUCCEEDED_WITHOUT_USAGE]) == 5


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("plain", "plain"),
        ("", ""),
        ("a=b", "a=b"),
        (None, None),
        (-5, -5),
        (12, 12),
    ],
)
def test_cells_a_spreadsheet_would_run_get_a_leading_quote(cell: object, written: object) -> None:
    assert spreadsheet_safe(cell) == written


def _record(ids: list[str], sizes: list[int]) -> tuple[SubmissionRecord, list[BatchPlan]]:
    plans, first = [], 0
    for index, size in enumerate(sizes):
        plans.append(BatchPlan(index, first, first + size, 100))
        first += size
    record = SubmissionRecord.new(TaskKey("d", "t", "r"), "fp", plans, ids)
    for index in range(len(sizes)):
        record = record.with_batch(index, f"msgbatch_{index}", 1.0)
    return record, plans


def test_expectations_come_from_the_record_and_the_input_when_it_was_split_the_same_way() -> None:
    record, plans = _record(IDS, [4, 6])
    expected = expected_from_record(record, IDS, plans)
    assert expected == {
        "msgbatch_0": ExpectedResults(4, custom_ids_digest(IDS[:4]), IDS[:4]),
        "msgbatch_1": ExpectedResults(6, custom_ids_digest(IDS[4:]), IDS[4:]),
    }
    other_split = [BatchPlan(0, 0, 5, 100), BatchPlan(1, 5, 10, 100)]
    assert all(
        e.custom_ids is None and e.custom_ids_sha256 for e in expected_from_record(record, IDS, other_split).values()
    )
    assert expected_from_record(None) == {}


def test_a_record_written_before_the_digest_field_still_loads() -> None:
    record, _ = _record(IDS, [10])
    raw = msgspec.json.decode(record.to_json())
    del raw["parts"][0]["custom_ids_sha256"]
    old = SubmissionRecord.from_json(msgspec.json.encode(raw))
    assert old.parts[0] == PartRecord(0, 10, 100, "r0", "r9", batch_id="msgbatch_0", created_at=1.0)
    assert expected_from_record(old)["msgbatch_0"] == ExpectedResults(10)


def _lines(n: int) -> list[bytes]:
    return [_line(f"r{i}", {"type": "expired"}) for i in range(n)]


def test_the_emulator_can_serve_a_duplicated_line_in_place_of_the_last() -> None:
    served = list(tampered_results(iter(_lines(4)), Fault("results", kind="duplicate_line", after_lines=1)))
    assert [json.loads(line)["custom_id"] for line in served] == ["r0", "r1", "r2", "r1"]


def test_the_emulator_can_serve_a_result_for_a_custom_id_never_submitted() -> None:
    served = list(tampered_results(iter(_lines(3)), Fault("results", kind="unknown_result")))
    assert [json.loads(line)["custom_id"] for line in served] == ["r0", "r1", UNKNOWN_CUSTOM_ID]
    assert served[-1].endswith(b"\n")
    assert list(tampered_results(iter(_lines(2)), None)) == _lines(2)


def test_stream_faults_apply_to_the_results_endpoint_only() -> None:
    with pytest.raises(ValueError, match="results endpoint only"):
        Fault.from_dict({"endpoint": "retrieve", "kind": "unknown_result"}, now=0)


@pytest.mark.parametrize(
    "given", ["../../v1/models", "msgbatch_1,..", ["msgbatch_ok", "msgbatch_a/b"], "msgbatch_1?x=1"]
)
def test_batch_ids_given_to_the_sensor_or_results_operator_are_checked_before_any_call(given: object) -> None:
    """The sensor's (and the results operator's) IDs go into request paths, trigger kwargs and Console links."""
    from airflow_provider_claude_batch.exceptions import BatchInputError
    from airflow_provider_claude_batch.operators.claude_batch import normalize_batch_ids

    with pytest.raises(BatchInputError, match="Not a Message Batch ID"):
        normalize_batch_ids(given)
    assert normalize_batch_ids(" msgbatch_a , msgbatch_b,msgbatch_a") == ["msgbatch_a", "msgbatch_b"]
