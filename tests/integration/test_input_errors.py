"""Malformed input through real Airflow (`dag.test()`) against the emulator: one input error naming the
line and the reason, the task failed without a retry (retries=2 is set), and not one API call made.

Each class here once reached the API or failed with a raw error Airflow would retry: an unterminated
CSV quote merged the rows after it into one paid prompt, a short row sent the word "None", Latin-1
bytes, a deep nesting or a `build_params` bug raised UnicodeDecodeError/RecursionError/AttributeError.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag
from tests.helpers import make_requests, message_params, printed

TEMPLATE = {"messages": [{"role": "user", "content": "Text: {text}"}]}


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _submit(tmp_path: Path, source: str, prelude: str = "") -> str:
    return prelude + (
        f'submit = ClaudeBatchSubmitOperator(task_id="submit", {source}, custom_id_column="id", '
        f'model="claude-haiku-5-5", max_tokens=8, state_path={str(tmp_path)!r}, create_policy=FAST, retries=2)'
    )


def _refused(dags: Path, dag_id: str, body: str, control: EmulatorControl, capfd: pytest.CaptureFixture[str]) -> str:
    """Run the DAG; the submit task must fail outright (no retry) with nothing sent. Returns the log."""
    result = run_dag(write_dag(dags, dag_id, body))
    out = printed(capfd)
    assert result.task_state("submit") == "failed", out[-3000:]  # not up_for_retry: an input error is final
    assert control.state()["calls"] == {}
    return out


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


CSV_CASES = {
    "unterminated_quote": (
        b'id,text\na,"hello\nb,world\nc,more\n',
        "1 of 1 requests are invalid",
        "line 2 (no custom_id): a quoted value that starts on this line is never closed",
    ),
    "short_and_long_rows": (
        b"id,text\nok-1,x\nshort\nok-2,y\nlong,x,extra\nok-3,z\n",
        "2 of 5 requests are invalid",
        "line 3 (no custom_id): 1 field(s) where the header has 2: no value for 'text'",
    ),
    "latin_1": (
        b"id,text\nok-1,cafe\nlatin,caf\xe9\n",
        "1 of 2 requests are invalid",
        "line 3 (no custom_id): not valid UTF-8: byte 0xe9 at byte 10",
    ),
    "empty_value": (
        b"id,text\nok-1,x\nempty,\n",
        "1 of 2 requests are invalid",
        "line 3 (custom_id 'empty'): placeholder {text}: the row's value is empty",
    ),
    "quote_then_text": (
        b'id,text\nbad,"x"y\nok-1,z\n',
        "1 of 2 requests are invalid",
        "line 2 (no custom_id): text follows a closing quote",
    ),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_a_malformed_csv_row_is_named_and_nothing_is_sent(
    case: str, dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data, count, named = CSV_CASES[case]
    path = _write(tmp_path, "rows.csv", data)
    out = _refused(
        dags, f"csv_{case}", _submit(tmp_path, f"rows_path={path!r}, params_template={TEMPLATE!r}"), control, capfd
    )
    assert f"InvalidRequestsError: {count}; nothing was submitted" in out
    assert named in out


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (b"id,text,text\n", "line 1 (the header): the column name(s) ['text'] repeat"),
        (b"id,text,\n", "line 1 (the header): column(s) [3] have no name"),
        (b"key,text\n", "line 1 (the header): no column 'id' (custom_id_column)"),
    ],
)
def test_a_csv_header_no_row_could_be_read_by_fails_before_any_call(
    header: bytes, named: str, dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "rows.csv", header + b"a,x,y\n")
    out = _refused(
        dags, "csv_header", _submit(tmp_path, f"rows_path={path!r}, params_template={TEMPLATE!r}"), control, capfd
    )
    assert "BatchInputError" in out and named in out


def test_quoted_line_breaks_crlf_and_a_byte_order_mark_are_read_as_written(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    path = _write(tmp_path, "rows.csv", b'\xef\xbb\xbfid,text\r\n1,"two\r\nlines"\r\n2,"a ""quoted"", text"\r\n')
    result = run_dag(
        write_dag(dags, "csv_good", _submit(tmp_path, f"rows_path={path!r}, params_template={TEMPLATE!r}"))
    )
    assert result.task_state("submit") == "success"
    (batch,) = control.state()["batches"]
    assert batch["custom_ids"] == ["1", "2"]


def test_bad_rows_given_in_python_and_a_failing_build_params_are_named(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    prelude = "def build(row):\n    return {'messages': [{'role': 'user', 'content': row['text'].strip()}]}\n"
    rows = [
        {"id": "ok-1", "text": "x"},
        {"id": "no-text", "text": None},
        {"id": True, "text": "x"},
        {"id": "ok-2", "text": "y"},
    ]
    out = _refused(dags, "rows_build", _submit(tmp_path, f"rows={rows!r}, build_params=build", prelude), control, capfd)
    assert "2 of 4 requests are invalid" in out
    assert "line 2 (custom_id 'no-text'): could not build params from the row: AttributeError(" in out
    assert "line 3 (no custom_id): column 'id' must be text or a whole number, got bool True" in out


def test_a_template_placeholder_that_reads_attributes_fails_before_any_call(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    template = {"messages": [{"role": "user", "content": "{text.__class__}"}]}
    out = _refused(
        dags,
        "template_attr",
        _submit(tmp_path, f"rows=[{{'id': 'a', 'text': 'x'}}], params_template={template!r}"),
        control,
        capfd,
    )
    assert (
        "BatchInputError: params_template.messages[0].content: placeholder {text.__class__} must name a column" in out
    )


def test_python_values_json_cannot_hold_are_named_and_every_request_is_counted(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    requests = (
        "[{'custom_id': 'nan', 'params': {'messages': [{'role': 'user', 'content': 'x'}], "
        "'temperature': float('nan')}}, "
        "{'custom_id': 'set', 'params': {'messages': [{'role': 'user', 'content': 'x'}], 'stop_sequences': {'a'}}}, "
        "*[{'custom_id': f'ok-{i}', 'params': {'messages': [{'role': 'user', 'content': 'x'}]}} for i in range(5)], "
        "{'custom_id': 'bytes', 'params': {'messages': [{'role': 'user', 'content': 'x'}], 'metadata': b'u'}}]"
    )
    out = _refused(dags, "python_values", _submit(tmp_path, f"requests={requests}"), control, capfd)
    assert "3 of 8 requests are invalid" in out
    assert "line 1 (custom_id 'nan'): params are not JSON-serializable: params.temperature is nan" in out
    assert "line 2 (custom_id 'set'): params are not JSON-serializable: params.stop_sequences is a set" in out
    assert "line 8 (custom_id 'bytes'): params are not JSON-serializable: params.metadata is a bytes" in out


def test_jsonl_lines_nested_too_deeply_or_not_utf_8_are_named(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    good = [json.dumps(r).encode() for r in make_requests(4)]
    deep = (
        b'{"custom_id": "deep", "params": '
        + json.dumps(message_params()).encode()[:-1]
        + b', "metadata": '
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}}"
    )
    model = json.dumps(message_params(model="claude-\u00e9")).encode().replace(b"\\u00e9", b"\xe9")
    path = _write(
        tmp_path,
        "in.jsonl",
        b"\n".join([good[0], deep, good[1], b'{"custom_id": "latin", "params": ' + model + b"}", good[2], good[3]])
        + b"\n",
    )
    out = _refused(dags, "jsonl_deep", _submit(tmp_path, f"requests_path={path!r}"), control, capfd)
    assert "2 of 6 requests are invalid" in out
    assert "line 2 (no custom_id): not valid JSON: nested too deeply" in out
    assert "line 4 (no custom_id): not valid UTF-8: byte 0xe9 at byte 52 of the line" in out


def test_a_utf_16_jsonl_file_is_refused_by_name(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "in.jsonl", json.dumps(make_requests(1)[0]).encode("utf-16"))
    out = _refused(dags, "jsonl_utf16", _submit(tmp_path, f"requests_path={path!r}"), control, capfd)
    assert "in.jsonl is UTF-16 or UTF-32 text (it starts with that byte order mark); save it as UTF-8" in out


def test_a_decorated_function_returning_values_json_cannot_hold_fails_before_any_call(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """What the function returns is stored as JSONL; msgspec would store NaN as null, a set as a list and
    bytes as base64 text (sent to the model as the prompt), so each is named instead, as for `requests=`."""
    dag = write_dag(
        dags,
        "decorated_not_json",
        f"""
        from airflow.sdk import task

        @task.claude_batch(output_path={str(tmp_path / "out")!r}, state_path={str(tmp_path / "state")!r},
                           model="claude-haiku-5-5", max_tokens=8, retries=2)
        def requests():
            ok = [{{"custom_id": f"ok-{{i}}", "params": {{"messages": [{{"role": "user", "content": "x"}}]}}}}
                  for i in range(3)]
            return [*ok, {{"custom_id": "nan", "params": {{"messages": [{{"role": "user", "content": "x"}}],
                                                       "temperature": float("nan")}}}},
                    {{"custom_id": "raw", "params": {{"messages": [{{"role": "user", "content": b"hello"}}]}}}}]

        @task.claude_batch(output_path={str(tmp_path / "rows_out")!r}, state_path={str(tmp_path / "state")!r},
                           model="claude-haiku-5-5", max_tokens=8, custom_id_column="id", retries=2,
                           params_template={{"messages": [{{"role": "user", "content": "Text: {{text}}"}}]}})
        def rows():
            return [{{"id": "a", "text": "fine"}}, {{"id": "b", "text": {{"x", "y"}}}}]

        requests()
        rows()
    """,
    )
    result = run_dag(dag)
    out = printed(capfd)
    assert result.task_state("requests") == "failed", out[-3000:]
    assert result.task_state("rows") == "failed", out[-3000:]
    assert "2 of 5 requests are invalid" in out
    assert (
        "line 4 (custom_id 'nan'): not JSON-serializable: request.params.temperature is nan, "
        "and JSON has no NaN or infinity"
    ) in out
    assert "line 5 (custom_id 'raw'): not JSON-serializable: request.params.messages[0].content is a bytes" in out
    assert "1 of 2 requests are invalid" in out
    assert "line 2 (custom_id 'b'): not JSON-serializable: row.text is a set" in out
    assert control.state()["calls"] == {}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ('formats=["jsonl", "xlsx"]', "Unknown output format(s) ['xlsx']"),
        ('formats=["parquet"]', "the one-task flow writes jsonl and csv"),
        (
            'landing_policy=LandingPolicy(price_overrides={"claude-haiku-5-5": {"inptu": 1, "output": 5}})',
            "price_overrides",
        ),
        (
            'landing_policy=LandingPolicy(price_overrides={"claude-haiku-5-5": {"input": -1, "output": 5}})',
            "price_overrides",
        ),
    ],
)
def test_one_task_flow_landing_options_it_cannot_honour_fail_before_any_call(
    options: str, expected: str, dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The one-task flow lands only after paying for every round: an output format it would silently not
    write, or a price table that cannot price (or prices below zero), is refused before the first create."""
    body = (
        "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator\n"
        f'submit = ClaudeBatchOperator(task_id="submit", requests={make_requests(3)!r}, '
        f'model="claude-haiku-5-5", max_tokens=8, state_path={str(tmp_path / "state")!r}, '
        f"output_path={str(tmp_path / 'out')!r}, create_policy=FAST, retries=2, {options})"
    )
    out = _refused(dags, "one_task_options", body, control, capfd)
    assert expected in out
