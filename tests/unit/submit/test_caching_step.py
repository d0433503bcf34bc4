"""The submit step's caching settings and the warm-up: refused values, what the warm-up records."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_claude_batch.requests.caching import CachePlan, SharedPrefix
from airflow_provider_claude_batch.submit.submission import Submission
from airflow_provider_claude_batch.submit.warmup import warm_cache


def test_prompt_caching_takes_auto_or_off_and_the_warmup_needs_auto() -> None:
    assert Submission().prompt_caching == "auto" and Submission().cache_warmup is False
    with pytest.raises(ValueError, match="'auto' or 'off'"):
        Submission(prompt_caching="on")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs 'auto'"):
        Submission(prompt_caching="off", cache_warmup=True)


def test_the_operators_and_the_decorator_take_the_caching_parameters() -> None:
    from airflow.sdk import task

    from airflow_provider_claude_batch.operators.claude_batch import ClaudeBatchOperator, ClaudeBatchSubmitOperator

    submit = ClaudeBatchSubmitOperator(task_id="s", requests=[], prompt_caching="off")
    one = ClaudeBatchOperator(task_id="o", requests=[], output_path="/tmp/x", cache_warmup=True)
    assert submit.submission.prompt_caching == "off" and one.submission.cache_warmup is True

    @task.claude_batch(output_path="/tmp/x", prompt_caching="off")  # type: ignore[attr-defined]
    def rows() -> list[dict[str, Any]]:
        return []

    assert rows().operator.submission.prompt_caching == "off"


class _Hook:
    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def create_message(self, params: dict[str, Any], *, custom_id: str, max_retries: int = 0) -> dict[str, Any]:
        self.calls.append((custom_id, params))
        if custom_id in self.fail:
            raise RuntimeError("overloaded")
        usage = {
            "input_tokens": 3,
            "output_tokens": 1,
            "cache_creation_input_tokens": 2000,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2000},
        }
        return {"model": params["model"], "usage": usage}


def test_the_warmup_calls_once_per_prefix_with_params_records_usage_and_passes_over_a_failure() -> None:
    call = {"model": "claude-sonnet-4-6", "max_tokens": 1, "messages": [{"role": "user", "content": "."}]}
    plan = CachePlan(
        (
            SharedPrefix("claude-sonnet-4-6", "a", 10, 2000, "system", call),
            SharedPrefix("claude-sonnet-4-6", "b", 5, 2000, "system", call),
            SharedPrefix("claude-sonnet-4-6", "c", 2, 2000, "system"),  # past MAX_WARMUP_PREFIXES: no params
        ),
        17,
    )
    hook = _Hook(fail={"cache-warmup-1"})
    recorded = warm_cache(hook, plan)  # type: ignore[arg-type]
    assert [c[0] for c in hook.calls] == ["cache-warmup-0", "cache-warmup-1"]
    assert recorded["calls"] == 1 and recorded["failed"] == 1
    usage = recorded["usage_by_model"]["claude-sonnet-4-6"]
    assert (usage["requests"], usage["cache_write_1h_tokens"], usage["input_tokens"]) == (1, 2000, 3)
