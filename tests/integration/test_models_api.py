"""The Models API as the official SDK and the hook see it, over real HTTP against the emulator."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0) as sdk:
        yield sdk


def test_the_sdk_lists_and_retrieves_models(client: anthropic.Anthropic) -> None:
    listed = [m.id for m in client.models.list(limit=4)]
    assert listed[0] == "claude-fable-5-2" and len(listed) > 4  # the SDK follows the cursor
    assert "claude-opus-4-1-20250805" not in listed
    model = client.models.retrieve("claude-haiku-4-5")
    assert model.id == "claude-haiku-4-5-20251001" and model.type == "model"
    assert model.max_tokens == 64_000 and model.lifecycle == "active"


def test_an_unknown_model_is_a_404_in_the_api_envelope(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.models.retrieve("claude-sonnet-9-9")
    assert caught.value.type == "not_found_error"
    assert caught.value.request_id


def test_the_hook_reads_model_info_and_none_for_an_unknown_model(claude_conn: str, control: EmulatorControl) -> None:
    control.add_models(
        {"id": "claude-test-small", "max_tokens": 2048, "max_input_tokens": 8192, "structured_outputs": False}
    )
    hook = ClaudeBatchHook(claude_conn)
    info = hook.get_model_info("claude-test-small")
    assert info is not None
    assert (info.max_tokens, info.max_input_tokens, info.structured_outputs) == (2048, 8192, False)
    retired = hook.get_model_info("claude-opus-4-1")
    assert retired is not None and retired.lifecycle == "retired"
    assert hook.get_model_info("claude-nonexistent-1") is None
    with pytest.raises(ValueError, match="model ID"):
        hook.get_model_info("../v1/messages/batches")
    assert control.state()["calls"]["models"] == 3
    hook.get_model_info("claude-test-small")
    hook.get_model_info("claude-nonexistent-1")
    assert control.state()["calls"]["models"] == 3  # asked once per hook, found or not


def test_faults_apply_to_the_models_api_and_reads_are_retried(claude_conn: str, control: EmulatorControl) -> None:
    control.inject({"endpoint": "models", "status": 529, "count": 1})
    info = ClaudeBatchHook(claude_conn).get_model_info("claude-sonnet-5-5")
    assert info is not None and info.structured_outputs is True
    state = control.state()
    assert state["responses"] == {"models 529": 1, "models 200": 1}


def test_a_reset_forgets_added_models(control: EmulatorControl) -> None:
    control.add_models({"id": "claude-temporary"})
    assert "claude-temporary" in control.add_models()
    control.reset()
    assert "claude-temporary" not in control.add_models()
