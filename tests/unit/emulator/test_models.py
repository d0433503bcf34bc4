"""The emulator's model catalogue: aliases, lifecycle filter, pagination, entries added by tests."""

from __future__ import annotations

import pytest

from airflow_provider_claude_batch.emulator.models import DEFAULT_MODELS, ModelCatalog, ModelSpec


def test_every_model_id_the_sdk_knows_is_in_the_catalogue() -> None:
    from typing import get_args

    from anthropic.types.model import Model

    known = get_args(get_args(Model)[0])
    catalog = ModelCatalog()
    assert [m for m in known if catalog.resolve(m) is None] == []


def test_aliases_resolve_and_unknown_ids_do_not() -> None:
    catalog = ModelCatalog()
    spec = catalog.resolve("claude-haiku-4-5")
    assert spec is not None and spec.id == "claude-haiku-4-5-20251001"
    assert catalog.resolve("claude-haiku-4-5-20251001") is spec
    assert catalog.resolve("claude-sonnet-5-6") is None


def test_the_list_hides_retired_models_unless_asked_and_pages_newest_first() -> None:
    catalog = ModelCatalog()
    ordered = [s.id for s in catalog.ordered() if s.lifecycle != "retired"]
    first = catalog.page(limit=5, after_id=None, before_id=None)
    assert [m["id"] for m in first["data"]] == ordered[:5] and first["has_more"] is True
    second = catalog.page(limit=5, after_id=first["last_id"], before_id=None)
    assert [m["id"] for m in second["data"]] == ordered[5:10]
    back = catalog.page(limit=5, after_id=None, before_id=second["first_id"])
    assert back["data"] == first["data"]
    everything = catalog.page(limit=1000, after_id=None, before_id=None)
    assert everything["has_more"] is False and len(everything["data"]) == len(ordered)
    retired = catalog.page(limit=1000, after_id=None, before_id=None, lifecycles=["retired"])
    assert {m["id"] for m in retired["data"]} == {s.id for s in DEFAULT_MODELS if s.lifecycle == "retired"}


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"limit": 0}, "limit"), ({"limit": 5, "lifecycles": ["gone"]}, "lifecycle")]
)
def test_bad_list_queries_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelCatalog().page(after_id=None, before_id=None, **kwargs)  # type: ignore[arg-type]


def test_an_added_entry_replaces_one_with_the_same_id() -> None:
    catalog = ModelCatalog()
    catalog.add([ModelSpec.from_dict({"id": "claude-sonnet-5-5", "max_tokens": 1000, "structured_outputs": False})])
    spec = catalog.resolve("claude-sonnet-5-5")
    assert spec is not None and spec.max_tokens == 1000 and spec.structured_outputs is False
    assert catalog.describe(spec)["capabilities"]["structured_outputs"] == {"supported": False}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"id": "gpt-5"}, "must start with 'claude-'"),
        ({"id": "claude-x", "lifecycle": "sunset"}, "lifecycle must be one of"),
        ({"id": "claude-x", "colour": "red"}, "unknown model field"),
        ({"id": "claude-x", "max_tokens": "big"}, "Expected `int | null`"),
    ],
)
def test_malformed_entries_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSpec.from_dict(raw)
