"""Before you spend: preflight, the cost estimate, the budget cap and the canary, through real Airflow
(`dag.test()`) and the SDK over HTTP against the emulator. Every refusal creates no batch.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import rerun_cleared, run_dag, write_dag
from tests.helpers import AIRFLOW_VERSION, message_params, printed

ONE_TASK = "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator\n"


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _requests(n: int, params: str = "") -> str:
    return (
        f"[{{'custom_id': f'r{{i}}', 'params': {{'messages': [{{'role': 'user', 'content': f'item {{i}} ' * 20}}]"
        f"{params}}}}} for i in range({n})]"
    )


def _submit(tmp_path: Path, requests: str, extra: str = "", model: str = "claude-sonnet-5-5") -> str:
    return (
        f'submit = ClaudeBatchSubmitOperator(task_id="submit", requests={requests}, model={model!r}, '
        f"max_tokens=32, state_path={str(tmp_path)!r}, create_policy=FAST{extra})"
    )


def _one_task(tmp_path: Path, out: Path, requests: str, extra: str = "") -> str:
    return ONE_TASK + (
        f'batch = ClaudeBatchOperator(task_id="batch", model="claude-sonnet-5-5", max_tokens=32, '
        f"state_path={str(tmp_path / 'state')!r}, requests={requests}, output_path={str(out)!r}, "
        f"deferrable=True, poll_interval=0.2, create_policy=FAST{extra})"
    )


def _refused(dags: Path, control: EmulatorControl, name: str, body: str, capfd: pytest.CaptureFixture[str]) -> str:
    """Run a DAG whose submit must fail before spending: no batch created, the output returned."""
    assert run_dag(write_dag(dags, name, body)).task_state("submit") == "failed"
    state = control.state()
    assert state["batches"] == [] and "create" not in state["calls"], "a refusal created a batch"
    return printed(capfd)


# ---- 1. preflight ----------------------------------------------------------------------------------
def test_an_unknown_model_fails_before_spend_naming_its_lines(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    requests = (
        _requests(3)
        + " + [{'custom_id': 'typo', 'params': {'model': 'claude-sonet-5-5', 'messages': "
        + ("[{'role': 'user', 'content': 'x'}]}}]")
    )
    out = _refused(dags, control, "preflight_unknown", _submit(tmp_path, requests), capfd)
    assert "1 of 4 requests would be refused by the API (preflight); nothing was submitted" in out
    assert "line 4 (custom_id 'typo'): params.model 'claude-sonet-5-5' is not a model the API knows" in out
    assert "did you mean 'claude-sonnet-5-5'?" in out
    assert control.state()["calls"]["models"] == 2  # each distinct model looked up once


@pytest.mark.parametrize(
    ("model", "params", "expected"),
    [
        ("claude-opus-4-1", "", "params.model 'claude-opus-4-1' is retired"),
        ("claude-sonnet-5-5", ", 'temperature': 0.5", "params.temperature: anthropic-version 2026-10-21"),
        ("claude-haiku-4-5", ", 'max_tokens': 100000", "params.max_tokens 100000 is over claude-haiku-4-5's limit"),
    ],
    ids=["retired model", "sampling on 2026-10-21", "max_tokens over the model's"],
)
def test_what_the_api_would_refuse_fails_before_spend(
    dags: Path,
    control: EmulatorControl,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    model: str,
    params: str,
    expected: str,
) -> None:
    out = _refused(dags, control, "preflight_refusal", _submit(tmp_path, _requests(2, params), model=model), capfd)
    assert "2 of 2 requests would be refused by the API (preflight)" in out
    assert f"line 1 (custom_id 'r0'): {expected}" in out and "line 2 (custom_id 'r1')" in out


def test_a_prompt_over_the_context_window_fails_before_spend(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    control.add_models({"id": "claude-small-window", "max_input_tokens": 100})
    requests = "[{'custom_id': 'short', 'params': {'messages': [{'role': 'user', 'content': 'hi'}]}}, " + (
        "{'custom_id': 'long', 'params': {'messages': [{'role': 'user', 'content': 'word ' * 200}]}}]"
    )
    out = _refused(dags, control, "preflight_window", _submit(tmp_path, requests, model="claude-small-window"), capfd)
    assert "1 of 2 requests would be refused" in out
    assert "line 2 (custom_id 'long'): 2" in out and "over claude-small-window's context window of 100" in out


def test_preflight_off_checks_nothing_and_the_batch_reports_the_error(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0)
    result = run_dag(
        write_dag(dags, "preflight_off", _submit(tmp_path, _requests(2), ", preflight=False", model="claude-opus-4-1"))
    )
    assert result.task_state("submit") == "success"
    state = control.state()
    assert len(state["batches"]) == 1 and "models" not in state["calls"] and "count_tokens" not in state["calls"]


# ---- token counting: rate limits and the fallback ---------------------------------------------------
def test_a_rate_limited_count_waits_as_retry_after_says(
    dags: Path, control: EmulatorControl, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    control.inject({"endpoint": "count_tokens", "status": 429, "retry_after": 1, "count": 2})
    result = run_dag(write_dag(dags, "count_rate_limited", _submit(tmp_path, _requests(3))))
    assert result.task_state("submit") == "success"
    out = caplog.text
    assert out.count("Token counting is rate limited; waiting 1 s as the API asks (retry-after)") == 2
    assert control.state()["calls"]["count_tokens"] == 3 + 2
    assert "every request counted with the token-counting endpoint" in out
    record = result.xcom("submit", "submission_record")
    assert record["estimate"]["method"] == "counted" and record["estimate"]["counted_requests"] == 3


def test_without_token_counting_the_estimate_is_size_based_and_says_so(
    dags: Path, control: EmulatorControl, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    control.inject({"endpoint": "count_tokens", "status": 404, "for_seconds": 3600})  # e.g. a gateway without it
    result = run_dag(write_dag(dags, "count_unavailable", _submit(tmp_path, _requests(3))))
    assert result.task_state("submit") == "success"
    out = caplog.text
    assert "Token counting is unavailable (404 not_found_error" in out
    assert "estimated from the requests' size (token counting unavailable)" in out
    assert control.state()["calls"]["count_tokens"] <= 3  # one call per request in flight, none again
    assert result.xcom("submit", "submission_record")["estimate"]["method"] == "size-based"


# ---- 2-3. the estimate and the budget ---------------------------------------------------------------
def test_a_budget_below_the_estimates_low_figure_fails_before_spend_with_both_figures(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = _refused(dags, control, "budget_refused", _submit(tmp_path, _requests(3), ", max_cost_usd=0.000001"), capfd)
    assert "The estimated cost is over max_cost_usd=$1e-06" in out
    assert "at batch price" in out and "(no output) to $" in out and "Raise max_cost_usd" in out
    assert "BudgetExceededError" in out


def test_a_budget_below_only_the_high_figure_warns_and_submits(
    dags: Path, control: EmulatorControl, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # 3 requests of ~45 input tokens and 32 max_tokens on Sonnet 5.5 ($1/$5 per million at batch price):
    # about $0.00014 with no output, $0.00062 with every max_tokens written.
    result = run_dag(write_dag(dags, "budget_warned", _submit(tmp_path, _requests(3), ", max_cost_usd=0.0003")))
    assert result.task_state("submit") == "success"
    out = caplog.text
    assert "The estimated cost may go over max_cost_usd=$0.0003" in out and "lower max_tokens" in out
    assert len(control.state()["batches"]) == 1


def test_the_manifest_shows_the_estimate_beside_the_actual_cost(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    control.configure(processing_seconds=0.2)
    out = tmp_path / "out"
    result = run_dag(write_dag(dags, "estimate_vs_actual", _one_task(tmp_path, out, _requests(4))))
    assert result.task_state("batch") == "success"
    estimate = json.loads((out / "_manifest.json").read_text())["estimate"]
    assert estimate["method"] == "counted" and estimate["requests"] == 4
    assert estimate["input_tokens"] == estimate["actual_input_tokens"]  # every request counted: exact
    assert estimate["actual_within_range"] is True
    assert estimate["batch_usd_low"] <= estimate["actual_batch_usd"] <= estimate["batch_usd_high"]
    # Through batches only: what was paid is the batch figure, judged against the batch range.
    assert estimate["actual_paid_usd"] == estimate["actual_batch_usd"] and estimate["paid_within_range"] is True
    assert (estimate["paid_usd_low"], estimate["paid_usd_high"]) == (
        estimate["batch_usd_low"],
        estimate["batch_usd_high"],
    )
    assert "Estimated before submitting: $" in printed(capfd)


def test_a_run_through_the_messages_api_judges_what_it_paid_against_the_standard_price_range(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    result = run_dag(write_dag(dags, "estimate_vs_paid_sync", _one_task(tmp_path, out, _requests(4), ", route='sync'")))
    assert result.task_state("batch") == "success"
    manifest = json.loads((out / "_manifest.json").read_text())
    estimate = manifest["estimate"]
    assert estimate["actual_within_range"] is True  # the tokens, at the batch price, as estimated
    # The bill: every row at the standard price (twice the batch price), judged against that range.
    assert estimate["actual_paid_usd"] == pytest.approx(manifest["cost"]["paid_usd"])
    assert estimate["actual_paid_usd"] == pytest.approx(2 * estimate["actual_batch_usd"], rel=1e-3)
    assert (estimate["paid_usd_low"], estimate["paid_usd_high"]) == (
        estimate["standard_usd_low"],
        estimate["standard_usd_high"],
    )
    assert estimate["paid_within_range"] is True
    assert "the Messages API's rows at the standard price" in printed(capfd)


# ---- 4. the canary ------------------------------------------------------------------------------------
def test_a_passing_canary_is_followed_by_the_rest_as_one_result_set_and_a_clear_re_attaches_to_both(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    out = tmp_path / "out"
    dag = write_dag(dags, "canary_passes", _one_task(tmp_path, out, _requests(5), ", canary_requests=2"))
    date = pendulum.datetime(2026, 4, 1, tz="UTC")
    assert run_dag(dag, date).task_state("batch") == "success"
    batches = control.state()["batches"]
    assert [b["custom_ids"] for b in batches] == [["r0", "r1"], ["r2", "r3", "r4"]]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == [f"r{i}" for i in range(5)]  # one row per custom_id
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [b["id"] for b in manifest["batches"]] == [b["id"] for b in batches]

    # The record is under state_path, so on Airflow < 3.3 (no clear that keeps the run in dag.test)
    # re-running the same date is the same clear-and-re-run.
    rerun = rerun_cleared if AIRFLOW_VERSION >= (3, 3) else run_dag
    assert rerun(dag, date).task_state("batch") == "success"
    state = control.state()
    assert len(state["batches"]) == 2 and state["calls"]["create"] == 2  # re-attached to both parts


def test_a_failing_canary_stops_the_rest_and_names_the_requests(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes(
        {"match": "r1", "outcome": "errored", "error_type": "invalid_request_error", "error_message": "bad tool"}
    )
    out = tmp_path / "out"
    result = run_dag(write_dag(dags, "canary_fails", _one_task(tmp_path, out, _requests(5), ", canary_requests=2")))
    assert result.task_state("batch") == "failed"
    batches = control.state()["batches"]
    assert [b["custom_ids"] for b in batches] == [["r0", "r1"]]  # the rest was never submitted
    text = printed(capfd)
    assert "1 of the 2 canary requests" in text and "the other 3 requests were not submitted" in text
    assert "line 2 (custom_id 'r1'): invalid_request_error: bad tool" in text
    assert "CanaryFailedError" in text


def test_the_submit_operator_returns_the_canary_and_the_rest(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "r0", "outcome": "errored", "error_type": "overloaded_error"})  # the service's
    body = _submit(tmp_path, _requests(4), ", canary_requests=1, deferrable=False, poll_interval=0.1")
    result = run_dag(write_dag(dags, "canary_submit", body))
    assert result.task_state("submit") == "success"
    batches = control.state()["batches"]
    assert [b["custom_ids"] for b in batches] == [["r0"], ["r1", "r2", "r3"]]
    assert result.xcom("submit") == [b["id"] for b in batches]


def test_the_decorator_takes_the_spend_controls(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dag = write_dag(
        dags,
        "decorated_budget",
        f"""
        from airflow.sdk import task

        @task.claude_batch(output_path={str(tmp_path / "out")!r}, model="claude-opus-5-5", max_tokens=16,
                           state_path={str(tmp_path / "state")!r}, max_cost_usd=0.000001, canary_requests=1)
        def questions():
            return [{{"custom_id": f"q{{i}}", "params": {{"messages": [{{"role": "user", "content": f"Q{{i}}?"}}]}}}}
                    for i in range(3)]

        questions()
    """,
    )
    assert run_dag(dag).task_state("questions") == "failed"
    assert "The estimated cost is over max_cost_usd=$1e-06" in printed(capfd)
    assert control.state()["batches"] == []


# ---- 6. a large input costs a few dozen calls ----------------------------------------------------------
@pytest.mark.parametrize("read", ["sorted", "in one pass"])
def test_preflight_of_100000_requests_makes_a_few_dozen_calls_and_estimates_the_input_closely(
    control: EmulatorControl, claude_conn: str, record_metric: Any, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    from airflow_provider_claude_batch.emulator.tokens import input_tokens
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.preflight import run
    from airflow_provider_claude_batch.preflight.run import run_preflight
    from airflow_provider_claude_batch.requests.hashing import prepare_requests

    # More than LARGE_INPUT requests are read in one pass (preflight/large.py), fewer sorted in memory.
    monkeypatch.setattr(run, "LARGE_INPUT", 200_000 if read == "sorted" else 10_000)

    requests = [
        {"custom_id": f"r{i}", "params": message_params("word " * (1 + i % 500), max_tokens=16)} for i in range(100_000)
    ]
    prepared, _, bad = prepare_requests(list(enumerate(requests, start=1)))
    assert not bad
    hook = ClaudeBatchHook(claude_conn)
    assert hook.client is not None  # (the connection read and the client built: the create needs them anyway)
    started = time.perf_counter()
    estimate = run_preflight(hook, prepared)
    elapsed = time.perf_counter() - started
    calls = control.state(custom_ids=False)["calls"]
    assert calls["models"] == 1 and calls["count_tokens"] <= 40
    actual = sum(input_tokens(json.dumps(r["params"]).encode()) for r in requests)
    assert estimate.method == "sampled" and estimate.input_tokens == pytest.approx(actual, rel=0.01)
    record_metric(
        f"preflight of 100,000 requests ({read})",
        f"{elapsed:.2f} s, {calls['count_tokens']} count calls; {estimate.input_tokens} input tokens estimated, "
        f"{actual} counted one by one",
    )


def test_requests_near_the_context_window_are_counted_too_and_named(control: EmulatorControl, claude_conn: str) -> None:
    from airflow_provider_claude_batch.exceptions import PreflightRefusedError
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.preflight.run import run_preflight
    from airflow_provider_claude_batch.requests.hashing import prepare_requests

    control.add_models({"id": "claude-small-window", "max_input_tokens": 1000})
    sizes = {7: 1400, 70: 1500, 300: 1600}  # words: about 1.25 tokens each in the emulator's count
    requests = [
        {"custom_id": f"r{i}", "params": message_params("word " * sizes.get(i, 50), model="claude-small-window")}
        for i in range(500)
    ]
    prepared, _, _ = prepare_requests(list(enumerate(requests, start=1)))
    with pytest.raises(PreflightRefusedError) as refused:
        run_preflight(ClaudeBatchHook(claude_conn), prepared)
    assert refused.value.bad_count == 3
    assert [p.split(" (")[0] for p in refused.value.problems] == ["line 8", "line 71", "line 301"]
    assert control.state(custom_ids=False)["calls"]["count_tokens"] <= 40


def test_a_model_without_a_reported_context_window_is_estimated_without_the_window_check(
    control: EmulatorControl, claude_conn: str
) -> None:
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.preflight.run import run_preflight
    from airflow_provider_claude_batch.requests.hashing import prepare_requests

    control.add_models({"id": "claude-sonnet-5-5", "max_input_tokens": None})  # a priced model, no window known
    prepared, _, _ = prepare_requests(list(enumerate([{"custom_id": "a", "params": message_params()}], start=1)))
    estimate = run_preflight(ClaudeBatchHook(claude_conn), prepared)
    assert estimate.method == "counted" and estimate.batch_usd_low > 0


def test_max_cost_usd_holds_the_sync_route_to_the_standard_price(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # 3 requests of ~45 input tokens on Sonnet 5.5: ~$0.00014 at batch price with no output, ~$0.00027 at
    # the standard price the Messages API route pays: a cap between the two must refuse the sync route.
    out = tmp_path / "out"
    body = _one_task(tmp_path, out, _requests(3), ", route='sync', max_cost_usd=0.0002").replace(
        'task_id="batch"', 'task_id="submit"'
    )
    text = _refused(dags, control, "budget_sync_route", body, capfd)
    assert control.state()["messages_answered"] == {}, "the sync route paid past max_cost_usd"
    assert "The estimated cost is over max_cost_usd=$0.0002" in text and "at standard price" in text
