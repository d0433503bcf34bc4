"""The emulator is safe to leave running: its control routes refuse a web page (no key, not JSON),
malformed control input is a 400 that breaks nothing later, and a body is read as it arrives, with a
timeout, so a client declaring a huge Content-Length or trickling its body costs neither memory nor
the other clients' service."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from tests.helpers import EmulatorProcess, make_requests


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0) as sdk:
        yield sdk


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},  # what a cross-site form can send
        {"content-type": "application/json"},  # JSON, but no key
        {"content-type": "application/json", "x-api-key": "guessed"},  # a wrong key
        {"content-type": "text/plain", "x-api-key": "emulator-key"},  # the key, but not JSON
    ],
)
def test_a_web_page_cannot_switch_key_checking_off_or_inject_faults(
    emulator: EmulatorServer, client: anthropic.Anthropic, headers: dict[str, str]
) -> None:
    for route, payload in (
        ("config", {"api_key": None}),
        ("faults", {"faults": [{"endpoint": "*", "status": 500, "count": 100}]}),
    ):
        status, answer = _post(f"{emulator.url}/_emulator/{route}", json.dumps(payload).encode(), headers)
        assert status in (401, 415), answer
        assert answer["type"] == "error"
    with (
        anthropic.Anthropic(base_url=emulator.url, api_key="not-the-key", max_retries=0) as stranger,
        pytest.raises(anthropic.AuthenticationError),
    ):
        stranger.messages.batches.list()
    client.messages.batches.list()  # no fault was injected
    assert emulator.control.state()["faults_pending"] == []


def test_reading_the_state_needs_the_key_too(emulator: EmulatorServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{emulator.url}/_emulator/state", timeout=30)
    assert caught.value.code == 401


def test_the_api_key_or_the_control_token_opens_the_control_routes(emulator: EmulatorServer) -> None:
    assert EmulatorControl(emulator.url, emulator.api_key).state()["batches_created"] == 0
    emulator.control.configure(api_key=None)  # any key is accepted by the API now, but not by the controls
    with pytest.raises(urllib.error.HTTPError) as caught:
        EmulatorControl(emulator.url, "anything").state()
    assert caught.value.code == 401
    assert emulator.control.state()["batches_created"] == 0


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("config", b"{not json"),
        ("config", b"[1, 2]"),
        ("config", b'{"processing_seconds": "soon"}'),
        ("config", b'{"max_body_bytes": -1}'),
        ("config", b'{"no_such_setting": 1}'),
        ("clock", b'{"advance_seconds": "an hour"}'),
        ("clock", b'{"set_epoch": null}'),
        ("faults", b'{"faults": "all of them"}'),
        ("faults", b'{"faults": [{"endpoint": "list", "status": 500, "count": "three"}]}'),
        ("faults", b'{"faults": [{"endpoint": "list", "status": "500"}]}'),
        ("faults", b'{"faults": [{"endpoint": "list", "for_seconds": "long"}]}'),
        ("faults", b'{"faults": [{"endpoint": "nowhere"}]}'),
        ("outcomes", b'{"rules": [{"match": "(unclosed"}]}'),
        ("outcomes", b'{"rules": [{"match": "x", "times": "twice"}]}'),
        ("outcomes", b'{"rules": [7]}'),
        ("batches", b'{"requests": [{"custom_id": "a", "params": {}}]}'),
        ("batches", b'{"count": 0, "requests": [{"custom_id": "a", "params": {}}]}'),
        ("batches", b'{"count": true, "requests": [{"custom_id": "a", "params": {}}]}'),
        ("batches", b'{"count": 100001, "requests": [{"custom_id": "a", "params": {}}]}'),
        ("batches", b'{"count": 2, "requests": "many"}'),
        ("batches", b'{"count": 2}'),
    ],
)
def test_malformed_control_input_gets_a_400_and_breaks_nothing_later(
    emulator: EmulatorServer, client: anthropic.Anthropic, route: str, body: bytes
) -> None:
    headers = {"content-type": "application/json", "x-api-key": emulator.control_token}
    status, answer = _post(f"{emulator.url}/_emulator/{route}", body, headers)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    batch = client.messages.batches.create(requests=make_requests(2))  # type: ignore[arg-type]
    assert client.messages.batches.retrieve(batch.id).id == batch.id
    assert [b.id for b in client.messages.batches.list()] == [batch.id]
    emulator.control.advance(10)
    assert emulator.control.state()["batches_created"] == 1


# ---- bodies, over raw sockets against a separate emulator process ------------------------------------
def _send_headers(port: int, content_length: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"POST /v1/messages/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: emulator-key\r\n"
        f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {content_length}\r\n\r\n".encode()
    )
    return sock


def _status_of(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_declared_content_length_is_not_allocated_and_a_stalled_body_times_out(
    emulator_process: EmulatorProcess,
) -> None:
    control = emulator_process.control
    control.configure(body_idle_seconds=2.0, body_total_seconds=60.0)
    declared = 200_000_000
    before = emulator_process.resident()
    started = time.monotonic()
    with _send_headers(emulator_process.port, declared) as stalled:
        stalled.sendall(b'{"requests": [')
        time.sleep(0.5)
        grown = emulator_process.resident() - before
        served_meanwhile = control.state(custom_ids=False)["batches_created"]  # another client is answered
        status = _status_of(stalled)
    waited = time.monotonic() - started
    assert grown < 20_000_000, f"the emulator grew by {grown / 1e6:.0f} MB for a declared, unsent body"
    assert served_meanwhile == 0
    assert status == 408
    assert 1.5 < waited < 15


def test_a_trickling_body_times_out_while_others_are_served(emulator_process: EmulatorProcess) -> None:
    control = emulator_process.control
    control.configure(body_idle_seconds=1.0, body_total_seconds=2.0)
    stop = threading.Event()
    with _send_headers(emulator_process.port, 10_000) as trickling:

        def trickle() -> None:
            while not stop.wait(0.2):
                try:
                    trickling.sendall(b" ")
                except OSError:
                    return

        feeder = threading.Thread(target=trickle, daemon=True)
        feeder.start()
        try:
            answered = [control.state(custom_ids=False)["calls"] for _ in range(3)]
            status = _status_of(trickling)
        finally:
            stop.set()
            feeder.join(timeout=5)
    assert len(answered) == 3
    assert status == 408


def test_a_declared_oversize_body_gets_413_and_is_not_stored(emulator_process: EmulatorProcess) -> None:
    control = emulator_process.control
    control.configure(body_idle_seconds=30.0, body_total_seconds=600.0, max_body_bytes=1000)
    try:
        with _send_headers(emulator_process.port, 5000) as sock:
            sock.sendall(b" " * 5000)
            assert _status_of(sock) == 413
        assert control.state(custom_ids=False)["batches_created"] == 0
    finally:
        control.configure(max_body_bytes=256_000_000)
