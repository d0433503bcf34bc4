"""Token counting and the catalogue's per-request checks, as the official SDK sees them from the emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from tests.helpers import message_params


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0) as sdk:
        yield sdk


def _results(client: anthropic.Anthropic, requests: list[dict[str, object]]) -> dict[str, object]:
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}


def test_the_count_agrees_with_the_input_tokens_a_batch_result_reports(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    control.configure(processing_seconds=0)
    params = message_params("Count me " * 50, system="You are terse.")
    counted = client.messages.count_tokens(
        model="claude-sonnet-5-5",
        messages=params["messages"],  # type: ignore[arg-type]
        system="You are terse.",
    )
    assert counted.input_tokens > 100
    result = _results(client, [{"custom_id": "a", "params": params}])["a"]
    assert result.type == "succeeded"  # type: ignore[attr-defined]
    assert result.message.usage.input_tokens == counted.input_tokens  # type: ignore[attr-defined]


def test_generation_fields_are_refused_as_the_api_refuses_them(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post(
            "/v1/messages/count_tokens",
            body={**message_params(), "max_tokens": 64},
            cast_to=object,
        )
    assert caught.value.type == "invalid_request_error"
    assert "max_tokens: Extra inputs are not permitted" in caught.value.api_message


def test_an_unknown_or_retired_model_is_a_404(client: anthropic.Anthropic) -> None:
    for model in ("claude-sonnet-9-9", "claude-opus-4-1"):
        with pytest.raises(anthropic.NotFoundError):
            client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "x"}])


def test_a_rate_limited_count_says_when_to_come_back(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.inject({"endpoint": "count_tokens", "status": 429, "retry_after": 7})
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.count_tokens(model="claude-sonnet-5-5", messages=[{"role": "user", "content": "x"}])
    assert caught.value.response.headers["retry-after"] == "7"
    assert client.messages.count_tokens(model="claude-sonnet-5-5", messages=[{"role": "user", "content": "x"}])


def test_a_batch_request_naming_an_unknown_or_retired_model_errors_not_found(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    control.configure(processing_seconds=0)
    results = _results(
        client,
        [
            {"custom_id": "typo", "params": message_params(model="claude-sonet-5-5")},
            {"custom_id": "retired", "params": message_params(model="claude-opus-4-1")},
            {"custom_id": "alias", "params": message_params(model="claude-haiku-4-5")},
            {"custom_id": "too-long", "params": message_params(model="claude-haiku-4-5", max_tokens=64_001)},
        ],
    )
    kinds = {cid: (r.type, getattr(getattr(r, "error", None), "error", None)) for cid, r in results.items()}  # type: ignore[attr-defined]
    assert kinds["alias"][0] == "succeeded"
    assert kinds["typo"][1].type == "not_found_error"  # type: ignore[union-attr]
    assert kinds["retired"][1].type == "not_found_error"  # type: ignore[union-attr]
    assert kinds["too-long"][1].type == "invalid_request_error"  # type: ignore[union-attr]
    assert "64000" in kinds["too-long"][1].message  # type: ignore[union-attr]
