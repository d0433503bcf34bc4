"""The List cache: one call per connection per refresh window, never waited on past its timeout."""

from __future__ import annotations

import threading

from airflow_provider_claude_batch.dashboard.sources import ListingCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fresh_page_is_reused_until_it_is_older_than_the_ttl() -> None:
    calls: list[str] = []
    clock = Clock()

    def fetch(conn_id: str, timeout: float) -> dict[str, object]:
        calls.append(conn_id)
        return {f"msgbatch_{len(calls)}": object()}

    cache = ListingCache(ttl=30, timeout=5, fetch=fetch, clock=clock)  # type: ignore[arg-type]
    (first,) = cache.listings(["c"])
    clock.now += 10
    (again,) = cache.listings(["c"])
    clock.now += 30
    (later,) = cache.listings(["c"])
    assert calls == ["c", "c"]
    assert list(first.batches) == list(again.batches) == ["msgbatch_1"] and list(later.batches) == ["msgbatch_2"]
    assert first.error is None


def test_a_slow_api_is_not_waited_on_past_the_timeout_and_its_answer_serves_the_next_refresh() -> None:
    release = threading.Event()

    def fetch(conn_id: str, timeout: float) -> dict[str, object]:
        release.wait(10)
        return {"msgbatch_late": object()}

    cache = ListingCache(ttl=30, timeout=0.2, fetch=fetch)  # type: ignore[arg-type]
    (slow,) = cache.listings(["c"])
    assert slow.error == "no answer within 0.2 s" and dict(slow.batches) == {}
    release.set()
    cache._pool.shutdown(wait=True)
    (next_one,) = cache.listings(["c"])
    assert list(next_one.batches) == ["msgbatch_late"] and next_one.error is None


def test_a_failed_call_is_described_without_the_key_and_the_last_page_is_kept() -> None:
    clock = Clock()
    answers: list[object] = [{"msgbatch_1": object()}, ConnectionError("refused by sk-ant-api03-" + "x" * 40)]

    def fetch(conn_id: str, timeout: float) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = ListingCache(ttl=1, timeout=5, fetch=fetch, clock=clock)  # type: ignore[arg-type]
    cache.listings(["c"])
    clock.now += 2
    (failed,) = cache.listings(["c"])
    assert list(failed.batches) == ["msgbatch_1"]
    assert failed.error is not None and "ConnectionError" in failed.error and "x" * 40 not in failed.error
