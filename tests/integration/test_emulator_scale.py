"""A 100,000-request batch and its 100,000 result lines, in a separate emulator process whose memory
we read from /proc: the body is held once, and streaming results does not grow with their number."""

from __future__ import annotations

import sys
import time

import msgspec
import pytest

from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from tests.helpers import EmulatorProcess

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")]


@pytest.fixture
def hook(emulator_process: EmulatorProcess, monkeypatch: pytest.MonkeyPatch) -> ClaudeBatchHook:
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_CLAUDE_BATCH_DEFAULT",
        json.dumps(
            {
                "conn_type": "claude_batch",
                "host": emulator_process.url,
                "password": "emulator-key",
                "extra": {"timeout": 300},
            }
        ),
    )
    return ClaudeBatchHook()


def _body(count: int) -> bytes:
    padding = "x" * 1000
    return msgspec.json.encode(
        {
            "requests": [
                {
                    "custom_id": f"r-{i}",
                    "params": {
                        "model": "claude-sonnet-5-5",
                        "max_tokens": 64,
                        "messages": [{"role": "user", "content": f"{padding} {i}"}],
                    },
                }
                for i in range(count)
            ]
        }
    )


def _stream_results(hook: ClaudeBatchHook, batch_id: str) -> tuple[int, int]:
    lines = size = 0
    for chunk in hook.iter_result_chunks(batch_id):
        size += len(chunk)
        lines += chunk.count(b"\n")
    return lines, size


def test_a_full_size_batch_is_held_once_and_its_results_stream_flat(
    emulator_process: EmulatorProcess, hook: ClaudeBatchHook, record_metric
) -> None:  # type: ignore[no-untyped-def]
    small_body = _body(10_000)
    small = hook.create_batch(small_body)
    del small_body
    body = _body(100_000)
    emulator_process.reset_peak()
    before = emulator_process.resident()
    started = time.perf_counter()
    big = hook.create_batch(body)
    create_seconds = time.perf_counter() - started
    create_growth = emulator_process.peak() - before
    assert big.request_counts.processing == 100_000
    assert create_growth < 1.8 * len(body), "the emulator held more than one copy of the body"

    growth = {}
    for batch, count in ((small, 10_000), (big, 100_000)):
        emulator_process.reset_peak()
        before = emulator_process.resident()
        lines, size = _stream_results(hook, batch.id)
        growth[count] = emulator_process.peak() - before
        assert lines == count
    assert growth[100_000] < 32 * 2**20
    assert abs(growth[100_000] - growth[10_000]) < 16 * 2**20
    record_metric(
        "emulator, 100k-request create",
        f"{len(body) / 1e6:.0f} MB body in {create_seconds:.1f} s, peak RSS growth {create_growth / 1e6:.0f} MB",
    )
    record_metric(
        "emulator, streaming results",
        f"peak RSS growth {growth[10_000] / 1e6:.1f} MB for 10k lines, "
        f"{growth[100_000] / 1e6:.1f} MB for 100k lines ({size / 1e6:.0f} MB)",
    )
    assert emulator_process.control.state(custom_ids=False)["batches_created"] == 2
