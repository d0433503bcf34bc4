"""The emulator's Messages API as the official SDK and the hook see it: standard-price answers, the
same outcome rules as batches, rate limits, latency and faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anthropic
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
from tests.helpers import message_params


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0) as sdk:
        yield sdk


def test_the_sdk_gets_a_message_at_the_standard_price(client: anthropic.Anthropic) -> None:
    message = client.messages.create(**message_params())  # type: ignore[arg-type]
    assert message.type == "message" and message.content[0].type == "text"
    assert message.usage.service_tier == "standard"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_the_same_request_gets_the_same_answer_as_in_a_batch(claude_conn: str, control: EmulatorControl) -> None:
    hook = ClaudeBatchHook(claude_conn)
    control.configure(processing_seconds=0)
    params = message_params()
    batch = hook.create_batch([{"custom_id": "same-1", "params": params}])
    [line] = list(hook.iter_result_lines(batch.id))
    import json

    in_batch = json.loads(line)["result"]["message"]
    alone = hook.create_message(params, custom_id="same-1")
    assert alone["content"] == in_batch["content"]
    assert alone["usage"]["input_tokens"] == in_batch["usage"]["input_tokens"]
    assert (alone["usage"]["service_tier"], in_batch["usage"]["service_tier"]) == ("standard", "batch")


def test_outcome_rules_apply_and_count_across_calls(claude_conn: str, control: EmulatorControl) -> None:
    control.set_outcomes({"match": "flaky-.*", "outcome": "errored", "error_type": "overloaded_error", "times": 1})
    hook = ClaudeBatchHook(claude_conn)
    with pytest.raises(anthropic.InternalServerError) as caught:
        hook.create_message(message_params(), custom_id="flaky-1")
    assert caught.value.status_code == 529
    assert hook.create_message(message_params(), custom_id="flaky-1")["type"] == "message"
    assert control.state()["messages_answered"] == {"flaky-1": 2}


def test_bad_params_are_refused_at_once(claude_conn: str, control: EmulatorControl) -> None:
    hook = ClaudeBatchHook(claude_conn)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        hook.create_message(message_params(max_tokens=0), custom_id="bad-1")
    with pytest.raises(anthropic.BadRequestError, match="x-claude-batch-custom-id"):
        hook.create_message(message_params(), custom_id="not a custom id")


def test_calls_over_the_in_flight_limit_get_a_429_with_retry_after(claude_conn: str, control: EmulatorControl) -> None:
    control.configure(messages_latency_seconds=0.5, messages_max_in_flight=1)
    hook = ClaudeBatchHook(claude_conn)
    first = threading.Thread(target=hook.create_message, args=(message_params(),), kwargs={"custom_id": "slow-1"})
    started = time.monotonic()
    first.start()
    time.sleep(0.2)
    with pytest.raises(anthropic.RateLimitError) as caught:
        ClaudeBatchHook(claude_conn).create_message(message_params(), custom_id="second-1")
    first.join()
    assert caught.value.response.headers["retry-after"] == "1"
    assert time.monotonic() - started >= 0.5


def test_faults_apply_to_the_messages_api(claude_conn: str, control: EmulatorControl) -> None:
    control.inject({"endpoint": "messages", "status": 500, "count": 1})
    hook = ClaudeBatchHook(claude_conn)
    assert hook.create_message(message_params(), custom_id="retried-1", max_retries=1)["type"] == "message"
    assert control.state()["responses"] == {"messages 500": 1, "messages 200": 1}
