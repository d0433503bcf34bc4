"""ModelInfo from the Models API's answers: the fields preflight and structured output decide on."""

from __future__ import annotations

import msgspec
import pytest

from airflow_provider_claude_batch.emulator.models import DEFAULT_MODELS, ModelCatalog
from airflow_provider_claude_batch.preflight.models import decode_model_info


def test_a_catalogue_answer_reads_as_the_model_it_describes() -> None:
    catalog = ModelCatalog()
    spec = catalog.resolve("claude-sonnet-4-5")
    assert spec is not None
    info = decode_model_info(msgspec.json.encode(catalog.describe(spec)))
    assert info.id == "claude-sonnet-4-5-20250929"
    assert info.lifecycle == "deprecated"
    assert (info.max_input_tokens, info.max_tokens) == (200_000, 64_000)
    assert info.structured_outputs is False and info.batch is True
    assert set(info.capabilities) >= {"batch", "structured_outputs", "thinking", "effort"}


def test_bytes_and_decoded_objects_give_the_same_info() -> None:
    catalog = ModelCatalog()
    described = catalog.describe(DEFAULT_MODELS[0])
    assert decode_model_info(described) == decode_model_info(msgspec.json.encode(described))
    assert decode_model_info(described).structured_outputs is True


def test_an_answer_without_capabilities_supports_nothing() -> None:
    info = decode_model_info(
        b'{"type": "model", "id": "claude-x", "display_name": "X", "created_at": "2025-01-01T00:00:00Z"}'
    )
    assert info.lifecycle == "active"
    assert info.structured_outputs is False and info.batch is False
    assert info.max_tokens is None and info.max_input_tokens is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"display_name": "no id"}',
        b'{"id": "claude-x", "lifecycle": "sunset"}',
        b"[]",
        b'{"id": "claude-x", "max_tokens": "9"}',
    ],
)
def test_an_answer_that_is_not_a_model_is_an_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a Models API model object"):
        decode_model_info(raw)
