"""Automatic prompt caching through `dag.test()` against the emulator: breakpoints on the shared
instruction, cache reads in the landed rows and the manifest, the warm-up paid once, a retry that
re-attaches, and a malformed cache_control refused before anything is spent."""

from __future__ import annotations

import json
import logging
from datetime import UTC
from pathlib import Path

import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl
from tests.dag_runner import run_dag, write_dag
from tests.helpers import printed

HEADER = "from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator\n"
INSTRUCTION = "Label the review as positive, negative or neutral, and nothing else. " * 120  # ~2,000 tokens


@pytest.fixture
def dags(airflow_db: Path, claude_conn: str) -> Path:
    return airflow_db


def _one_task(tmp_path: Path, out: Path, extra: str = "", n: int = 12, systems: int = 1) -> str:
    return (
        HEADER
        + f"""
INSTRUCTIONS = [{INSTRUCTION!r} + str(k) for k in range({systems})]
batch = ClaudeBatchOperator(
    task_id="batch", model="claude-sonnet-4-6", max_tokens=5, state_path={str(tmp_path / "state")!r},
    requests=[{{"custom_id": f"r{{i}}", "params": {{"system": INSTRUCTIONS[i % {systems}],
               "messages": [{{"role": "user", "content": f"Review {{i}}: fine"}}]}}}} for i in range({n})],
    output_path={str(out)!r}, deferrable=True, poll_interval=0.2, create_policy=FAST, max_retry_rounds=0{extra})
"""
    )


def _rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_auto_caching_puts_the_shared_instruction_in_the_cache_and_the_manifest_says_what_it_saved(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.2, cache_hit_probability=1.0)
    out = tmp_path / "out"
    result = run_dag(write_dag(dags, "caching_auto", _one_task(tmp_path, out)))
    assert result.task_state("batch") == "success"
    rows = _rows(out / "results.jsonl")
    assert all("cache_read_input_tokens" in r and "cache_write_1h_tokens" in r for r in rows)
    writers = [r for r in rows if r["cache_write_1h_tokens"]]
    readers = [r for r in rows if r["cache_read_input_tokens"]]
    assert len(writers) == 1 and len(readers) == 11  # the first request writes, the other eleven read
    assert readers[0]["cache_read_input_tokens"] == writers[0]["cache_write_1h_tokens"] > 1024
    caching = json.loads((out / "_manifest.json").read_text())["caching"]
    total = caching["total"]
    assert (total["requests_caching"], total["requests_reading"], total["hit_rate"]) == (
        12,
        11,
        pytest.approx(11 / 12, abs=1e-4),
    )
    assert caching["by_model"]["claude-sonnet-4-6"]["cache_read_tokens"] == total["cache_read_tokens"] > 0
    assert total["paid_usd"] < total["batch_without_caching_usd"] < total["standard_without_caching_usd"]
    assert total["saved_usd"] > 0 and total["warmup_usd"] == 0 and caching["warmup"] is None
    assert control.state()["messages_answered"] == {}  # no warm-up asked for


def test_caching_off_sends_the_requests_as_given(dags: Path, control: EmulatorControl, tmp_path: Path) -> None:
    control.configure(processing_seconds=0.2)
    out = tmp_path / "out"
    run_dag(write_dag(dags, "caching_off", _one_task(tmp_path, out, ', prompt_caching="off"')))
    assert not any(r["cache_read_input_tokens"] or r["cache_write_1h_tokens"] for r in _rows(out / "results.jsonl"))
    assert json.loads((out / "_manifest.json").read_text())["caching"]["total"]["requests_caching"] == 0


def test_the_warmup_writes_each_prefix_once_and_a_retry_reattaches_without_warming_again(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import die_after_create

    control.configure(processing_seconds=0.3, cache_hit_probability=1.0)
    die_after_create(monkeypatch, 1, "worker killed right after the create")
    out = tmp_path / "out"
    body = _one_task(tmp_path, out, ", cache_warmup=True, retries=1, retry_delay=timedelta(0)", systems=2)
    result = run_dag(write_dag(dags, "caching_warmup", body))
    assert result.task_state("batch") == "success"
    state = control.state()
    assert state["batches_created"] == 1  # the retry re-attached to the batch the first try made
    assert state["messages_answered"] == {"cache-warmup-0": 1, "cache-warmup-1": 1}  # one per prefix, once
    rows = _rows(out / "results.jsonl")
    assert all(r["cache_read_input_tokens"] and not r["cache_write_1h_tokens"] for r in rows)  # all read
    caching = json.loads((out / "_manifest.json").read_text())["caching"]
    assert caching["warmup"] == {"calls": 2, "failed": 0}
    assert caching["total"]["hit_rate"] == 1.0 and caching["total"]["warmup_usd"] > 0


def test_a_malformed_cache_control_is_refused_with_zero_api_calls(
    dags: Path, control: EmulatorControl, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    block = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    requests = [
        {"custom_id": "ok", "params": {"messages": [{"role": "user", "content": "hi"}]}},
        {"custom_id": "five", "params": {"system": [block] * 5, "messages": [{"role": "user", "content": "hi"}]}},
    ]
    body = f"""
submit = ClaudeBatchSubmitOperator(task_id="submit", model="claude-sonnet-4-6", max_tokens=5,
    state_path={str(tmp_path / "state")!r}, requests={requests!r}, cache_warmup=True, create_policy=FAST, retries=2)
"""
    result = run_dag(write_dag(dags, "caching_refused", body))
    out = printed(capfd)
    assert result.task_state("submit") == "failed", out[-3000:]  # not up_for_retry: an input error is final
    assert "line 2 (custom_id 'five'): 5 cache_control breakpoints" in out and "at most 4" in out
    state = control.state()
    assert state["calls"] == {} and state["messages_answered"] == {}


def test_the_three_task_flow_lands_the_submit_tasks_warmup_in_the_manifest(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    control.configure(processing_seconds=0.3, cache_hit_probability=1.0)
    out = tmp_path / "out"
    body = f"""
from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchResultsOperator
submit = ClaudeBatchSubmitOperator(task_id="submit", model="claude-sonnet-4-6", max_tokens=5, system={INSTRUCTION!r},
    requests=[{{"custom_id": f"r{{i}}", "params": {{"messages": [{{"role": "user", "content": f"Review {{i}}"}}]}}}}
              for i in range(6)],
    state_path={str(tmp_path / "state")!r}, cache_warmup=True, create_policy=FAST)
wait = ClaudeBatchSensor(task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.2)
land = ClaudeBatchResultsOperator(task_id="land", batch_ids=submit.output, output_path={str(out)!r})
submit >> wait >> land
"""
    result = run_dag(write_dag(dags, "caching_three_tasks", body))
    assert result.task_state("land") == "success"
    assert control.state()["messages_answered"] == {"cache-warmup-0": 1}
    caching = json.loads((out / "_manifest.json").read_text())["caching"]
    assert caching["warmup"] == {"calls": 1, "failed": 0} and caching["total"]["warmup_usd"] > 0
    assert caching["total"]["requests_reading"] == 6  # the warm-up wrote it: every request read


def test_a_submission_recorded_before_caching_is_re_attached_not_paid_again(
    dags: Path, control: EmulatorControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A try that created its batch without breakpoints (caching off, or a release before it) and died;
    the next try, now with prompt_caching="auto", finds that record and sends nothing new."""
    from datetime import datetime

    from tests.helpers import die_after_create

    control.configure(processing_seconds=0.2, cache_hit_probability=1.0)
    out = tmp_path / "out"
    day = datetime(2026, 12, 1, tzinfo=UTC)
    die_after_create(monkeypatch, 1, "worker killed right after the create")
    first = run_dag(write_dag(dags, "caching_upgrade", _one_task(tmp_path, out, ', prompt_caching="off"')), day)
    assert first.task_state("batch") == "failed"
    assert control.state()["batches_created"] == 1
    second = run_dag(write_dag(dags, "caching_upgrade", _one_task(tmp_path, out)), day)
    assert second.task_state("batch") == "success"
    assert control.state()["batches_created"] == 1  # re-attached to the batch the uncached try made
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 12 and not any(r["cache_read_input_tokens"] for r in rows)  # sent as it was recorded


def test_the_caching_section_prices_a_messages_api_round_at_the_standard_price(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_dag(
        write_dag(dags, "caching_sync", _one_task(tmp_path, out, ", route='sync', sync_concurrency=1", n=4))
    )
    assert result.task_state("batch") == "success"
    manifest = json.loads((out / "_manifest.json").read_text())
    total = manifest["caching"]["total"]
    assert total["cache_read_tokens"] > 0  # the Messages API reads what the first call wrote
    # Every request went through the Messages API: what caching paid is what the run paid, at the standard price.
    assert total["paid_usd"] == pytest.approx(manifest["cost"]["paid_usd"], abs=2e-6)
    assert total["saved_usd"] == pytest.approx(total["standard_without_caching_usd"] - total["paid_usd"], abs=2e-6)


def test_on_the_messages_api_the_first_call_of_a_shared_prefix_goes_alone_so_only_it_writes_the_entry(
    dags: Path, control: EmulatorControl, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A cache entry is readable once the answer of the call that writes it goes out: calls in flight
    # together would each pay to write it (2x the input price for 1 hour). Six at a time, two prefixes.
    control.configure(messages_latency_seconds=0.3)
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    body = _one_task(tmp_path, out, ", route='sync', sync_concurrency=6", n=12, systems=2)
    result = run_dag(write_dag(dags, "caching_sync_parallel", body))
    assert result.task_state("batch") == "success"
    rows = _rows(out / "results.jsonl")
    writers = sorted(str(r["custom_id"]) for r in rows if r["cache_write_1h_tokens"])
    assert writers == ["r0", "r1"]  # the first request of each system prompt
    assert sum(1 for r in rows if r["cache_read_input_tokens"] and not r["cache_write_1h_tokens"]) == 10
    assert "2 cached prefixes are shared by several of them" in caplog.text


def test_the_warmup_of_a_structured_output_writes_the_entry_the_batch_reads(
    dags: Path, control: EmulatorControl, tmp_path: Path
) -> None:
    # output_config is part of the cache key: a warm-up without the requests' format writes an entry
    # no batch request reads (paid at the standard price for nothing), and the batch writes it again.
    control.configure(processing_seconds=0.2, cache_hit_probability=1.0)
    out = tmp_path / "out"
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    body = _one_task(tmp_path, out, f", cache_warmup=True, output_type={schema!r}", n=4)
    result = run_dag(write_dag(dags, "caching_warmup_structured", body))
    assert result.task_state("batch") == "success"
    assert control.state()["messages_answered"] == {"cache-warmup-0": 1}
    rows = _rows(out / "results.jsonl")
    assert all(r["cache_read_input_tokens"] and not r["cache_write_1h_tokens"] for r in rows)  # all read
