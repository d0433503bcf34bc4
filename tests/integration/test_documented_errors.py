"""The errors are the documented ones, against the emulator over real HTTP: a results_url on another
origin is refused before the key goes there, refusals fail the results operator without retries, a
failing proxy is named, a misplaced key is masked, and the queue guard has the wait trigger's budget."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from airflow_provider_claude_batch.exceptions import ResultsOriginRefusedError
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from airflow_provider_claude_batch.triggers.claude_batch import ClaudeBatchQueueTrigger
from tests.dag_runner import run_dag, write_dag
from tests.helpers import AIRFLOW_VERSION, make_requests

KEY = "sk-ant-api03-" + "Qw7_eR4-" * 12
LAND_HEADER = "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator\n"


def _connection(
    monkeypatch: pytest.MonkeyPatch, host: str, password: str = "emulator-key", **extra: Any
) -> ClaudeBatchHook:
    conn = {
        "conn_type": "claude_batch",
        "host": host,
        "password": password,
        "extra": {"timeout": 5, "max_retries": 0, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT", json.dumps(conn))
    return ClaudeBatchHook()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ended_batch(control: EmulatorControl, n: int = 2) -> str:
    batch_id = ClaudeBatchHook().create_batch(make_requests(n)).id
    control.advance(60)
    return batch_id


# ---- results_url origin ------------------------------------------------------------------------------
def test_a_results_url_on_another_origin_is_refused_before_any_request(
    emulator: EmulatorServer, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The emulator builds results_url from the Host it was sent: a gateway answering with a foreign URL.
    hook = _connection(
        monkeypatch, emulator.url, anthropic_client_kwargs={"default_headers": {"Host": "files.example:9"}}
    )
    batch_id = hook.create_batch(make_requests(2)).id
    control.advance(60)
    with pytest.raises(ResultsOriginRefusedError) as caught:
        list(hook.iter_result_chunks(batch_id))
    message = str(caught.value)
    assert batch_id in message
    assert "http://files.example:9" in message and emulator.url in message
    assert "emulator-key" not in message
    assert "results" not in control.state()["calls"]


def test_a_results_url_on_the_same_origin_streams(
    emulator: EmulatorServer, control: EmulatorControl, claude_conn: str
) -> None:
    batch_id = _ended_batch(control, 3)
    assert len(list(ClaudeBatchHook().iter_result_lines(batch_id))) == 3


# ---- connection test: proxies and misplaced keys ----------------------------------------------------------
def test_a_refused_proxy_says_proxy_and_names_only_its_host(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _closed_port()
    hook = _connection(monkeypatch, emulator.url, proxy=f"http://me:{KEY}@127.0.0.1:{port}")
    ok, message = hook.test_connection()
    assert not ok
    assert f"proxy http://127.0.0.1:{port}" in message
    assert KEY not in message and "me:" not in message


class _ProxyAuthRequired(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="corp"')
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy_407() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProxyAuthRequired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_proxy_that_wants_credentials_says_proxy(
    emulator: EmulatorServer, proxy_407: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _connection(monkeypatch, emulator.url, proxy=proxy_407.replace("http://", f"http://me:{KEY}@"))
    ok, message = hook.test_connection()
    assert not ok
    assert "proxy" in message and "407" in message and proxy_407 in message
    assert KEY not in message


def test_a_socks_proxy_without_its_extra_gets_a_clear_message(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "socksio" else real_find_spec(name, *a)
    )
    hook = _connection(monkeypatch, emulator.url, proxy=f"socks5://me:{KEY}@127.0.0.1:1080")
    ok, message = hook.test_connection()
    assert not ok
    assert "SOCKS proxy" in message and "socksio" in message and "[socks]" in message
    assert KEY not in message


@pytest.mark.parametrize(
    "misplaced",
    [
        {"workspace_id": KEY},
        {"beta_headers": KEY},
        pytest.param(
            {"host_suffix": "/" + KEY},
            marks=pytest.mark.skipif(
                AIRFLOW_VERSION < (3, 1),
                reason="Airflow 3.0 masks registered secrets only in a task's logs "
                "(settings.MASK_SECRETS_IN_LOGS is off elsewhere), so outside a task, as here, the HTTP library's "
                "request line shows the URL unmasked",
            ),
        ),
    ],
)
def test_a_key_pasted_into_the_wrong_field_is_never_repeated(
    emulator: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    misplaced: dict[str, str],
) -> None:
    extra = {k: v for k, v in misplaced.items() if k != "host_suffix"}
    hook = _connection(monkeypatch, emulator.url + misplaced.get("host_suffix", ""), **extra)
    ok, message = hook.test_connection()
    assert KEY not in message
    logged = capfd.readouterr()
    assert "Claude Batches API at" in logged.out
    assert KEY not in logged.out + logged.err
    if "workspace_id" in misplaced:
        assert not ok and "403" in message
    if AIRFLOW_VERSION >= (3, 1):
        from airflow.sdk.log import redact
    else:  # moved to airflow.sdk.log in 3.1
        from airflow.sdk.execution_time.secrets_masker import redact

    # Registered with Airflow's masker, so the HTTP library's lines (which log the URL) hide it too.
    assert KEY not in str(redact(f"GET {emulator.url}/{KEY}/v1/messages/batches"))


# ---- the queue trigger's budget ----------------------------------------------------------------------
async def _events(trigger: Any) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


async def test_the_queue_trigger_ends_within_its_budget_on_a_broken_url(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connection(monkeypatch, f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    (event,) = await _events(ClaudeBatchQueueTrigger(needed=1, max_queued=5, poll_interval=0.1, error_budget=2.0))
    assert event["status"] == "error" and event["error_kind"] == "unavailable"
    assert "Cannot list batches for" in event["message"]
    assert 2.0 <= time.monotonic() - started < 20


async def test_the_queue_trigger_ends_at_once_on_a_refusal(
    emulator: EmulatorServer, control: EmulatorControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    _connection(monkeypatch, emulator.url, password="not-the-key")
    (event,) = await _events(ClaudeBatchQueueTrigger(needed=1, max_queued=5, poll_interval=0.1, error_budget=600))
    assert event["status"] == "error" and event["error_kind"] == "refused"
    assert "401" in event["message"] and "not-the-key" not in event["message"]
    assert control.state()["calls"] == {"list": 1}


# ---- through real Airflow ----------------------------------------------------------------------------
@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


@pytest.mark.parametrize("endpoint", ["retrieve", "results"])
@pytest.mark.parametrize("status", [401, 403, 404])
def test_the_results_operator_fails_refusals_without_retrying(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str], endpoint: str, status: int
) -> None:
    batch_id = _ended_batch(control)
    control.inject({"endpoint": endpoint, "status": status, "count": 20})
    out = tmp_path / "out"
    dag = write_dag(
        dags,
        f"refused_{endpoint}_{status}",
        LAND_HEADER
        + f"""
land = ClaudeBatchResultsOperator(task_id="land", batch_ids={batch_id!r}, output_path={str(out)!r},
                                  retries=3, retry_delay=timedelta(0))
""",
    )
    result = run_dag(dag)
    assert result.task_state("land") == "failed"
    output = capfd.readouterr().out
    assert "BatchApiRefusedError" in output and f"{status} " in output and batch_id in output
    assert control.state()["calls"][endpoint] == 1, "a refusal was retried"
    assert not out.exists() or not (out / "_manifest.json").exists()


def test_a_refused_resubmission_round_fails_without_retrying(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r0", "outcome": "errored", "error_type": "overloaded_error", "times": 1})
    # The first create goes through; every later one is refused (a key revoked between rounds).
    control.inject(
        {"endpoint": "create", "kind": "delay", "delay_seconds": 0, "count": 1},
        {"endpoint": "create", "status": 401, "count": 20},
    )
    dag = write_dag(
        dags,
        "refused_round",
        f"""
from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator
run = ClaudeBatchOperator(
    task_id="run", model="claude-sonnet-5-5", max_tokens=32, state_path={str(tmp_path / "state")!r},
    output_path={str(tmp_path / "out")!r}, max_retry_rounds=1, create_policy=FAST, poll_interval=0.2,
    requests=[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": "x"}}]}}}}
              for i in range(3)], retries=2, retry_delay=timedelta(0))
""",
    )
    result = run_dag(dag)
    assert result.task_state("run") == "failed"
    assert "BatchApiRefusedError" in capfd.readouterr().out
    state = control.state()
    assert state["batches_created"] == 1
    assert state["calls"]["create"] == 2, "a refused create was retried"


@pytest.mark.parametrize(("status", "error"), [(503, "BatchApiError"), (401, "BatchApiRefusedError")])
def test_the_queue_guard_ends_within_its_budget_through_airflow(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str], status: int, error: str
) -> None:
    control.configure(processing_seconds=3600)
    _ended_batch(control, 4)  # still processing: the queue is full
    # The worker's first look sees the full queue; every look after it (the trigger's) fails.
    control.inject(
        {"endpoint": "list", "kind": "delay", "delay_seconds": 0, "count": 1},
        {"endpoint": "list", "status": status, "for_seconds": 3600},
    )
    dag = write_dag(
        dags,
        f"queue_budget_{status}",
        f"""
submit = ClaudeBatchSubmitOperator(
    task_id="submit", model="claude-sonnet-5-5", max_tokens=32, state_path={str(tmp_path / "state")!r},
    requests=[{{"custom_id": f"q{{i}}", "params": {{"messages": [{{"role": "user", "content": "x"}}]}}}}
              for i in range(3)], queue=QueuePolicy(max_queued_requests=5, check_interval=0.2),
    wait_policy=WaitPolicy(error_budget=2),
    create_policy=FAST)
""",
    )
    started = time.monotonic()
    result = run_dag(dag)
    assert result.task_state("submit") == "failed"
    assert time.monotonic() - started < 60
    output = capfd.readouterr().out
    assert error in output and "Cannot list batches" in output
    assert control.state()["batches_created"] == 1, "nothing may be created while the queue is unknown"
