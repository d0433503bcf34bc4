"""ClaudeBatchHook against the emulator through a real Airflow connection."""

from __future__ import annotations

import json
import logging
import traceback

import anthropic
import msgspec
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from airflow_provider_claude_batch.hooks.claude_batch import BatchNotEndedError, ClaudeBatchHook
from tests.helpers import make_requests

SECRET = "sk-ant-api03-DO-NOT-LEAK-7f3c9a"


def test_create_from_bytes_or_requests_and_read_everything_back(claude_conn: str, control: EmulatorControl) -> None:
    control.configure(processing_seconds=0)
    hook = ClaudeBatchHook()
    body = msgspec.json.encode({"requests": make_requests(3, "bytes")})
    from_bytes = hook.create_batch(body)
    from_list = hook.create_batch(make_requests(2, "list"))
    assert from_bytes.request_counts.processing == 3
    assert hook.retrieve_batch(from_list.id).processing_status == "ended"
    assert [b.id for b in hook.iter_batches(page_size=1)] == [from_list.id, from_bytes.id]
    lines = list(hook.iter_result_lines(from_bytes.id))
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["bytes-0", "bytes-1", "bytes-2"]
    raw = b"".join(hook.iter_result_chunks(hook.retrieve_batch(from_bytes.id)))
    assert raw.split(b"\n")[:-1] == lines  # lossless: the bytes as served
    assert hook.delete_batch(from_bytes.id).id == from_bytes.id


def test_results_of_an_unended_batch_are_refused_clearly(claude_conn: str, control: EmulatorControl) -> None:
    control.configure(processing_seconds=3600)
    hook = ClaudeBatchHook()
    batch = hook.create_batch(make_requests(1))
    with pytest.raises(BatchNotEndedError, match="in_progress"):
        list(hook.iter_result_lines(batch.id))
    assert hook.cancel_batch(batch.id).processing_status in ("canceling", "ended")


def test_create_is_never_retried_by_the_sdk(claude_conn: str, control: EmulatorControl) -> None:
    control.inject({"endpoint": "create", "status": 529})
    with pytest.raises(anthropic.OverloadedError):
        ClaudeBatchHook().create_batch(make_requests(1))
    assert control.state()["calls"]["create"] == 1


def test_a_lost_create_answer_leaves_exactly_one_batch(claude_conn: str, control: EmulatorControl) -> None:
    control.inject({"endpoint": "create", "kind": "lost_response"})
    with pytest.raises(anthropic.APIConnectionError):
        ClaudeBatchHook().create_batch(make_requests(2))
    assert control.state()["batches_created"] == 1


def test_reads_are_retried_through_short_blips(claude_conn: str, control: EmulatorControl) -> None:
    hook = ClaudeBatchHook()
    batch = hook.create_batch(make_requests(1))
    control.inject({"endpoint": "retrieve", "status": 529, "count": 2, "retry_after": 0.05})
    assert hook.retrieve_batch(batch.id).id == batch.id
    assert control.state()["responses"]["retrieve 529"] == 2


async def test_the_async_client_is_built_once_and_closed(claude_conn: str, control: EmulatorControl) -> None:
    hook = ClaudeBatchHook()
    batch = ClaudeBatchHook().create_batch(make_requests(1))
    first = await hook.get_async_conn()
    assert (await hook.aretrieve_batch(batch.id)).id == batch.id
    assert await hook.get_async_conn() is first
    await hook.aclose()
    assert first.is_closed()


def test_an_anthropic_type_connection_works(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_MY_ANTHROPIC",
        json.dumps(
            {
                "conn_type": "anthropic",
                "host": emulator.url,
                "password": emulator.api_key,
                "extra": {"anthropic_client_kwargs": {"timeout": 15, "max_retries": 1}},
            }
        ),
    )
    hook = ClaudeBatchHook(claude_batch_conn_id="my_anthropic")
    assert hook.settings.timeout == 15
    assert hook.create_batch(make_requests(1)).type == "message_batch"


def test_test_connection_reports_success(claude_conn: str) -> None:
    ok, message = ClaudeBatchHook().test_connection()
    assert ok, message
    assert "Connection OK" in message


def test_test_connection_reports_a_rejected_key(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT",
        json.dumps({"conn_type": "claude_batch", "host": emulator.url, "password": SECRET}),
    )
    ok, message = ClaudeBatchHook().test_connection()
    assert not ok
    assert "Authentication failed" in message and SECRET not in message


def test_test_connection_reports_an_unreachable_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT",
        json.dumps(
            {"conn_type": "claude_batch", "host": "http://127.0.0.1:9", "password": SECRET, "extra": {"timeout": 2}}
        ),
    )
    ok, message = ClaudeBatchHook().test_connection()
    assert not ok
    assert "Cannot reach http://127.0.0.1:9" in message and SECRET not in message


def test_test_connection_without_a_key(emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT", json.dumps({"conn_type": "claude_batch", "host": emulator.url})
    )
    ok, message = ClaudeBatchHook().test_connection()
    assert not ok and "No API key" in message


def test_the_key_never_reaches_logs_reprs_or_errors(
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT",
        json.dumps({"conn_type": "claude_batch", "host": emulator.url, "password": SECRET}),
    )
    caplog.set_level(logging.DEBUG)
    hook = ClaudeBatchHook()
    seen = [repr(hook), str(hook), repr(hook.settings), repr(vars(hook))]
    with pytest.raises(anthropic.AuthenticationError) as caught:
        hook.create_batch(make_requests(1))
    seen += [str(caught.value), repr(caught.value), "".join(traceback.format_exception(caught.value))]
    with pytest.raises(anthropic.AuthenticationError) as caught_read:
        hook.retrieve_batch("msgbatch_x")
    seen += [str(caught_read.value), "".join(traceback.format_exception(caught_read.value))]
    seen.append(hook.test_connection()[1])
    captured = capsys.readouterr()
    seen += [caplog.text, captured.out, captured.err]
    leaks = [text for text in seen if SECRET in text]
    assert not leaks
