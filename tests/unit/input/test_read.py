"""Strict reading of CSV and JSONL rows and of templates: every malformed row is a problem named by its
line, before anything could be sent (no network here; files on the local disk)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.input import read as read_module
from airflow_provider_claude_batch.input.csv_records import csv_records
from airflow_provider_claude_batch.input.read import request_entries
from airflow_provider_claude_batch.input.rows import TemplateError, rows_to_requests, template_params_builder
from airflow_provider_claude_batch.requests.hashing import prepare_requests
from airflow_provider_claude_batch.requests.prepare import PreparedRequests, Problem, RequestDefaults
from tests.helpers import make_requests, message_params

TEMPLATE = {"messages": [{"role": "user", "content": "Text: {text}"}]}
DEFAULTS = RequestDefaults(model="claude-haiku-5-5", max_tokens=8)


def _csv(data: bytes, custom_id_column: str = "id") -> list[tuple[int, object]]:
    return list(csv_records(io.BytesIO(data), custom_id_column=custom_id_column, source="in.csv"))


def _reasons(entries: list[tuple[int, object]]) -> list[tuple[int, str]]:
    return [(number, entry.reason) for number, entry in entries if isinstance(entry, Problem)]


def _prepare(tmp_path: Path, name: str, data: bytes, **given: Any) -> tuple[PreparedRequests, list[str], int]:
    """Through `request_entries`, as the operator reads a file: the requests, the problems as shown, the bad count."""
    path = tmp_path / name
    path.write_bytes(data)
    form = (
        {"requests_path": str(path)}
        if name.endswith(".requests.jsonl")
        else {"rows_path": str(path), "params_template": given.pop("params_template", TEMPLATE)}
    )
    entries = request_entries(
        **{
            "requests": None,
            "requests_path": None,
            "rows": None,
            "rows_path": None,
            "rows_format": None,
            "custom_id_column": "id",
            "params_template": None,
            "build_params": None,
            "storage_conn_id": None,
            **form,
            **given,
        }
    )
    prepared, problems, bad = prepare_requests(entries, DEFAULTS)
    return prepared, [str(p) for p in problems], bad


def _contents(prepared: PreparedRequests) -> list[object]:
    return [r["params"]["messages"][0]["content"] for r in json.loads(prepared.body(0, len(prepared)))["requests"]]


# ---- CSV ----------------------------------------------------------------------------------------
def test_an_unterminated_quote_is_named_instead_of_swallowing_the_rows_after_it() -> None:
    entries = _csv(b'id,text\na,"hello\nb,world\nc,more\n')
    assert _reasons(entries) == [(2, "a quoted value that starts on this line is never closed (an unterminated quote)")]
    assert len(entries) == 1


def test_text_after_a_closing_quote_is_named_and_the_rows_after_it_still_read() -> None:
    entries = _csv(b'id,text\na,"x"y\nb,fine\n')
    assert _reasons(entries) == [
        (2, 'text follows a closing quote (a quote inside a quoted value is written twice: "")')
    ]
    assert entries[1] == (3, {"id": "b", "text": "fine"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"id,text\na\nb,x\n", "1 field(s) where the header has 2: no value for 'text'"),
        (
            b"id,text\na,x,extra\nb,x\n",
            '3 fields where the header has 2 (a value with a comma must be quoted, "like, this")',
        ),
    ],
)
def test_a_row_with_missing_or_extra_fields_is_a_problem_of_its_line(data: bytes, reason: str) -> None:
    entries = _csv(data)
    assert _reasons(entries) == [(2, reason)]
    assert entries[1] == (3, {"id": "b", "text": "x"})


def test_quoted_values_keep_commas_quotes_and_line_breaks_and_rows_are_numbered_by_their_first_line() -> None:
    data = b'id,text\r\na,"one, two"\r\nb,"say ""hi"""\r\n\r\nc,"line 1\r\nline 2\nline 3"\r\nd,last'
    assert _csv(data) == [
        (2, {"id": "a", "text": "one, two"}),
        (3, {"id": "b", "text": 'say "hi"'}),
        (5, {"id": "c", "text": "line 1\r\nline 2\nline 3"}),
        (8, {"id": "d", "text": "last"}),
    ]


def test_a_line_that_is_not_utf_8_is_named_with_its_byte_and_the_rest_still_read() -> None:
    entries = _csv(b'id,text\na,caf\xe9\nb,caf\xc3\xa9\nc,"multi\nline \xff"\n')
    assert _reasons(entries) == [
        (
            2,
            "not valid UTF-8: byte 0xe9 at byte 6 of the line (save the file as UTF-8; Latin-1 or Windows-1252 "
            "text looks like this)",
        ),
        (
            5,
            "not valid UTF-8: byte 0xff at byte 6 of the line (save the file as UTF-8; Latin-1 or Windows-1252 "
            "text looks like this)",
        ),
    ]
    assert entries[1] == (3, {"id": "b", "text": "caf\u00e9"})


def test_a_utf_8_byte_order_mark_is_stripped_and_a_utf_16_file_refused() -> None:
    assert _csv(b"\xef\xbb\xbfid,text\na,x\n") == [(2, {"id": "a", "text": "x"})]
    with pytest.raises(BatchInputError, match=r"in\.csv is UTF-16 or UTF-32 text"):
        _csv("id,text\na,x\n".encode("utf-16"))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"id,text,text\n", r"line 1 \(the header\): the column name\(s\) \['text'\] repeat"),
        (b"id,text,\n", r"line 1 \(the header\): column\(s\) \[3\] have no name \(a trailing comma\?\)"),
        (b"id, ,text\n", r"column\(s\) \[2\] have no name"),
        (b"key,text\n", r"no column 'id' \(custom_id_column\) among \['key', 'text'\]"),
        (b'id,"text\n', r"line 1 \(the header\): a quoted value that starts on this line is never closed"),
        (b"id,t\xe9xt\n", r"line 1 \(the header\): not valid UTF-8: byte 0xe9"),
    ],
)
def test_a_header_no_row_could_be_read_by_is_refused_outright(header: bytes, message: str) -> None:
    with pytest.raises(BatchInputError, match=message):
        _csv(header + b"a,x,y\n")


def test_a_header_alone_or_an_empty_file_has_no_rows() -> None:
    assert _csv(b"id,text\n") == [] and _csv(b"") == [] and _csv(b"\n\nid,text\n\n") == []


def test_a_value_longer_than_the_csv_default_limit_is_read(tmp_path: Path) -> None:
    long = "x" * 300_000
    prepared, problems, bad = _prepare(tmp_path, "long.csv", f'id,text\na,"{long}"\n'.encode())
    assert (bad, problems) == (0, []) and _contents(prepared) == [f"Text: {long}"]


def test_a_csv_file_goes_through_strict_reading_to_one_list_of_problems(tmp_path: Path) -> None:
    data = b'id,text\nok-1,fine\nshort\nok-2,"unclosed\nok-3,never read\n'
    prepared, problems, bad = _prepare(tmp_path, "rows.csv", data)
    assert bad == 2 and prepared.requests_read == 3
    assert problems == [
        "line 3 (no custom_id): 1 field(s) where the header has 2: no value for 'text'",
        "line 4 (no custom_id): a quoted value that starts on this line is never closed (an unterminated quote)",
    ]


def test_numeric_custom_ids_in_csv_are_text_and_kept_as_written(tmp_path: Path) -> None:
    prepared, _, bad = _prepare(tmp_path, "ids.csv", b"id,text\n1,x\n007,y\n")
    assert bad == 0 and prepared.custom_ids == ["1", "007"]


# ---- JSONL files ---------------------------------------------------------------------------------
def test_a_byte_order_mark_at_the_start_of_a_jsonl_file_is_stripped(tmp_path: Path) -> None:
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in make_requests(3))
    with_bom, _, bad = _prepare(tmp_path, "bom.requests.jsonl", b"\xef\xbb\xbf" + lines)
    plain, _, _ = _prepare(tmp_path, "plain.requests.jsonl", lines)
    assert bad == 0 and with_bom.buffer == plain.buffer and with_bom.fingerprint == plain.fingerprint
    rows, _, bad = _prepare(tmp_path, "bom.jsonl", b'\xef\xbb\xbf{"id": "a", "text": "x"}\n')
    assert bad == 0 and rows.custom_ids == ["a"]
    with pytest.raises(BatchInputError, match="UTF-16 or UTF-32"):
        _prepare(tmp_path, "wide.requests.jsonl", lines.decode().encode("utf-16"))


def test_a_block_boundary_inside_a_multi_byte_character_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        {"custom_id": f"r-{i}", "params": message_params("\u65e5\u672c\U0001f600" * (i + 1))} for i in range(40)
    ]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests).encode()
    whole, _, _ = _prepare(tmp_path, "whole.requests.jsonl", data)
    for block in (5, 7, 11, 64, 333):  # cuts fall inside 3- and 4-byte characters
        monkeypatch.setattr(read_module, "READ_BYTES", block)
        cut, problems, bad = _prepare(tmp_path, f"cut{block}.requests.jsonl", data)
        assert (bad, problems) == (0, []) and cut.buffer == whole.buffer and cut.fingerprint == whole.fingerprint


def test_deep_nesting_and_bad_utf_8_in_a_checked_field_are_problems_of_their_line(tmp_path: Path) -> None:
    good = [json.dumps(r).encode() for r in make_requests(3)]
    deep = (
        b'{"custom_id": "deep", "params": '
        + json.dumps(message_params()).encode()[:-1]
        + b', "metadata": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}}"
    )
    latin = json.dumps(message_params("caf\u00e9")).encode().replace(b"\\u00e9", b"\xe9")
    model = json.dumps(message_params(model="claude-\u00e9")).encode().replace(b"\\u00e9", b"\xe9")
    lines = [
        good[0],
        deep,
        b'{"custom_id": "latin", "params": ' + latin + b"}",
        good[1],
        b'{"custom_id": "m\xe9", "params": ' + model + b"}",
        good[2],
    ]
    for name in ("nested.requests.jsonl", "nested.jsonl"):
        template = {"params_template": {"messages": [{"role": "user", "content": "{custom_id}"}]}}
        prepared, problems, bad = _prepare(
            tmp_path,
            name,
            b"\n".join(lines) + b"\n",
            **({} if name.endswith(".requests.jsonl") else {"custom_id_column": "custom_id", **template}),
        )
        assert bad == 3 and prepared.requests_read == 6, name
        assert [p.split(": ", 1)[0] for p in problems] == [
            "line 2 (no custom_id)",
            "line 3 (no custom_id)",
            "line 5 (no custom_id)",
        ], name
        assert "nested too deeply" in problems[0] and "byte 0xe9" in problems[1] and "byte 0xe9" in problems[2]


# ---- rows and templates --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"id": "a"}, "placeholder {text} names no column of the row (its columns: 'id')"),
        ({"id": "a", "text": None}, "placeholder {text}: the row's value is empty"),
        ({"id": "a", "text": ""}, "placeholder {text}: the row's value is empty"),
        ({"id": "a", "text": "  "}, "placeholder {text}: the row's value is empty"),
        ({"id": "a", "text": math.nan}, "placeholder {text}: the row's value is nan"),
        (
            {"id": "a", "text": [1, 2]},
            "placeholder {text}: the row's value is a list; a template places text and "
            "numbers (use build_params for anything else)",
        ),
        ({"id": "a", "text": object()}, "placeholder {text}: the row's value is a object"),
    ],
)
def test_a_placeholder_without_a_usable_value_is_a_problem_never_none_in_a_prompt(
    row: dict[str, object], reason: str
) -> None:
    ((number, problem),) = rows_to_requests(
        [(7, row)], custom_id_column="id", build_params=template_params_builder(TEMPLATE)
    )
    assert number == 7 and isinstance(problem, Problem) and problem.reason.startswith(reason)
    assert problem.custom_id == "a"


def test_numbers_and_text_fill_a_template_and_literal_braces_stay() -> None:
    build = template_params_builder({"messages": [{"role": "user", "content": "{n} {{n}} {x:.1f} {s!r}"}]})
    ((_, request),) = rows_to_requests(
        [(1, {"id": 5, "n": 0, "x": 2.25, "s": "q"})], custom_id_column="id", build_params=build
    )
    assert request == {"custom_id": "5", "params": {"messages": [{"role": "user", "content": "0 {n} 2.2 'q'"}]}}


@pytest.mark.parametrize(
    "content", ["{text.upper}", "{text[0]}", "{}", "{0}", "{text:{width}}", "{text!x}", "{text", "text}"]
)
def test_a_template_placeholder_that_is_not_a_column_is_refused_before_any_row(content: str) -> None:
    with pytest.raises(TemplateError, match=r"params_template\.messages\[0\]\.content"):
        template_params_builder({"messages": [{"role": "user", "content": content}]})


def test_a_template_that_is_not_a_dict_is_refused() -> None:
    with pytest.raises(TemplateError, match="params_template must be a dict of params, got list"):
        template_params_builder([TEMPLATE])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("custom_id", "reason"),
    [
        (True, "column 'id' must be text or a whole number, got bool True"),
        (1.0, "column 'id' must be text or a whole number, got float 1.0"),
        (None, "column 'id' is missing or empty"),
        ("", "column 'id' is missing or empty"),
    ],
)
def test_a_custom_id_column_that_is_not_text_or_a_whole_number_is_a_problem(custom_id: object, reason: str) -> None:
    ((_, problem),) = rows_to_requests(
        [(1, {"id": custom_id, "text": "x"})], custom_id_column="id", build_params=template_params_builder(TEMPLATE)
    )
    assert isinstance(problem, Problem) and problem.reason == reason


def _raises_attribute_error(row: Any) -> Any:
    return row.missing


def _recurses(row: Any) -> Any:
    return _recurses(row)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (_raises_attribute_error, "could not build params from the row: AttributeError("),
        (_recurses, "could not build params from the row: RecursionError("),
        (lambda row: [row], "build_params returned list, not a dict of params"),
        (lambda row: None, "build_params returned NoneType, not a dict of params"),
    ],
)
def test_whatever_build_params_raises_or_returns_is_a_problem_of_its_row(build: Any, reason: str) -> None:
    entries = rows_to_requests([(1, {"id": "a"}), (2, {"id": "b"})], custom_id_column="id", build_params=build)
    _, problems, bad = prepare_requests(entries, DEFAULTS)
    assert bad == 2 and [p.line for p in problems] == [1, 2]
    assert problems[0].reason.startswith(reason) and problems[0].custom_id == "a"


@pytest.mark.parametrize(
    "given",
    [
        {"requests": {"custom_id": "a"}},
        {"requests": "abc"},
        {"requests": 5},
        {"rows": {"id": "a"}, "params_template": TEMPLATE},
    ],
)
def test_one_request_or_row_given_instead_of_a_list_is_refused(given: dict[str, object]) -> None:
    with pytest.raises(BatchInputError, match=r"must be a list of (requests|rows), got (dict|str|int)"):
        request_entries(
            **{
                "requests": None,
                "requests_path": None,
                "rows": None,
                "rows_path": None,
                "rows_format": None,
                "custom_id_column": "id",
                "params_template": None,
                "build_params": None,
                "storage_conn_id": None,
                **given,
            }
        )
