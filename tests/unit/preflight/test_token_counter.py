"""The counting calls' error rule: retry-after waited out within a budget, server errors retried a
little, a refused request noted, anything else makes counting unavailable. A scripted hook stands in
for the API (the emulator paths are in tests/integration/test_spend_control.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anthropic
import httpx2

from airflow_provider_claude_batch.preflight.run import RATE_LIMIT_WAIT_BUDGET, TokenCounter


def _error(cls: type[anthropic.APIStatusError], status: int, retry_after: float | None = None) -> Exception:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    request = httpx2.Request("POST", "https://api.example/v1/messages/count_tokens")
    body = {"type": "error", "error": {"type": "x", "message": f"status {status}"}}
    return cls(f"status {status}", response=httpx2.Response(status, headers=headers, request=request), body=body)


class _ScriptedHook:
    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def count_tokens(self, body: Mapping[str, Any]) -> int:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def describe_error(self, exc: BaseException) -> str:
        return f"{getattr(exc, 'status_code', '?')} error"


def _counter(hook: _ScriptedHook, slept: list[float]) -> TokenCounter:
    return TokenCounter(hook, sleep=slept.append)  # type: ignore[arg-type]


def test_a_429_is_waited_out_as_retry_after_says() -> None:
    slept: list[float] = []
    hook = _ScriptedHook(_error(anthropic.RateLimitError, 429, 3), _error(anthropic.RateLimitError, 429, 2), 42)
    counter = _counter(hook, slept)
    assert counter.count(0, {}) == 42
    assert slept == [3.0, 2.0] and counter.calls == 3 and not counter.unavailable


def test_rate_limits_past_the_budget_make_counting_unavailable() -> None:
    slept: list[float] = []
    hook = _ScriptedHook(*[_error(anthropic.RateLimitError, 429, 25)] * 5)
    counter = _counter(hook, slept)
    assert counter.count(0, {}) is None
    assert sum(slept) <= RATE_LIMIT_WAIT_BUDGET and counter.unavailable.startswith("rate limited for more than")
    assert counter.count(1, {}) is None and hook.calls == 3  # not asked again


def test_server_errors_are_retried_twice_then_counting_is_unavailable() -> None:
    slept: list[float] = []
    hook = _ScriptedHook(_error(anthropic.InternalServerError, 500), _error(anthropic.InternalServerError, 529), 7)
    assert _counter(hook, slept).count(0, {}) == 7 and slept == [1.0, 2.0]
    failing = _ScriptedHook(*[_error(anthropic.InternalServerError, 500)] * 3)
    counter = _counter(failing, [])
    assert counter.count(0, {}) is None and counter.unavailable == "500 error" and failing.calls == 3


def test_a_refused_request_is_noted_and_counting_goes_on() -> None:
    hook = _ScriptedHook(_error(anthropic.BadRequestError, 400), 5)
    counter = _counter(hook, [])
    assert counter.count(3, {}) is None and counter.count(4, {}) == 5
    assert counter.refused == {3: "the token-counting endpoint refused it: status 400"} and not counter.unavailable
