"""The emulator's model catalogue: what `GET /v1/models` and `GET /v1/models/{id}` answer.

The IDs, limits and lifecycles follow the Models API and the model pages (shared API facts, §9);
capability flags are the emulator's own choice where the docs are silent, so that both sides of
every capability decision can be exercised (a test may add or replace entries through
`/_emulator/models`). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.emulator.clock import rfc3339

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

LIFECYCLES = ("active", "deprecated", "retired")
_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One catalogue entry: a model and the aliases that resolve to it."""

    id: str
    display_name: str
    released: str
    lifecycle: str = "active"
    max_input_tokens: int | None = 1_000_000
    max_tokens: int | None = 128_000
    structured_outputs: bool = True
    batch: bool = True
    aliases: tuple[str, ...] = ()
    line: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelSpec:
        """An entry from the control route's JSON; unknown fields and bad values are refused."""
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model field(s): {sorted(unknown)}")
        data = {"display_name": raw.get("id", ""), "released": "2026-01-01", **raw}
        try:
            spec = msgspec.convert({**data, "aliases": list(data.get("aliases", ()))}, cls)
        except msgspec.ValidationError as exc:  # not a ValueError on msgspec 0.19
            raise ValueError(str(exc)) from None
        if not spec.id.startswith("claude-"):
            raise ValueError(f"model id must start with 'claude-', not {spec.id!r}")
        if spec.lifecycle not in LIFECYCLES:
            raise ValueError(f"lifecycle must be one of {LIFECYCLES}, not {spec.lifecycle!r}")
        return spec


def _spec(model_id: str, name: str, released: str, line: str, **kw: Any) -> ModelSpec:
    return ModelSpec(model_id, name, released, line=line, **kw)


_OLD = {"max_input_tokens": 200_000, "max_tokens": 64_000}
DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    _spec("claude-fable-5-2", "Claude Fable 5.2", "2026-11-09", "fable"),
    _spec("claude-mythos-5-2", "Claude Mythos 5.2", "2026-11-09", "mythos"),
    _spec("claude-haiku-5-5", "Claude Haiku 5.5", "2026-10-07", "haiku"),
    _spec("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-09-16", "sonnet"),
    _spec("claude-fable-5-1", "Claude Fable 5.1", "2026-08-12", "fable"),
    _spec("claude-opus-5-5", "Claude Opus 5.5", "2026-08-05", "opus"),
    _spec("claude-mythos-5-1", "Claude Mythos 5.1", "2026-07-15", "mythos"),
    _spec("claude-sonnet-5", "Claude Sonnet 5", "2026-06-10", "sonnet"),
    _spec("claude-fable-5", "Claude Fable 5", "2026-05-20", "fable"),
    _spec("claude-mythos-5", "Claude Mythos 5", "2026-05-20", "mythos"),
    _spec("claude-opus-5", "Claude Opus 5", "2026-04-22", "opus"),
    _spec("claude-opus-4-8", "Claude Opus 4.8", "2026-03-18", "opus"),
    _spec("claude-opus-4-7", "Claude Opus 4.7", "2026-02-11", "opus"),
    _spec("claude-mythos-preview", "Claude Mythos Preview", "2026-01-28", "mythos"),
    _spec("claude-opus-4-6", "Claude Opus 4.6", "2026-01-14", "opus"),
    _spec("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-01-14", "sonnet", max_tokens=64_000),
    _spec(
        "claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01", "haiku", aliases=("claude-haiku-4-5",), **_OLD
    ),
    _spec("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-01", "opus", aliases=("claude-opus-4-5",), **_OLD),
    _spec(
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29",
        "sonnet",
        aliases=("claude-sonnet-4-5",),
        lifecycle="deprecated",
        structured_outputs=False,
        **_OLD,
    ),
    _spec(
        "claude-opus-4-1-20250805",
        "Claude Opus 4.1",
        "2025-08-05",
        "opus",
        aliases=("claude-opus-4-1",),
        lifecycle="retired",
        structured_outputs=False,
        max_input_tokens=200_000,
        max_tokens=32_000,
    ),
    _spec(
        "claude-opus-4-20250514",
        "Claude Opus 4",
        "2025-05-14",
        "opus",
        aliases=("claude-opus-4-0",),
        lifecycle="retired",
        structured_outputs=False,
        max_input_tokens=200_000,
        max_tokens=32_000,
    ),
)


def _epoch(day: str) -> float:
    from datetime import UTC, datetime

    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


def _capabilities(spec: ModelSpec) -> dict[str, Any]:
    """Every capability key, as the API always sends them all."""
    modern = spec.max_input_tokens is not None and spec.max_input_tokens >= 1_000_000

    def flag(on: bool) -> dict[str, bool]:
        return {"supported": on}

    return {
        "batch": flag(spec.batch),
        "citations": flag(True),
        "code_execution": flag(modern),
        "context_management": {
            "supported": modern,
            "clear_thinking_20251015": modern,
            "clear_tool_uses_20250919": modern,
            "compact_20260112": modern,
        },
        "effort": {"supported": modern, "low": modern, "medium": modern, "high": modern, "max": modern, "xhigh": False},
        "image_input": flag(True),
        "pdf_input": flag(True),
        "server_tools": {"supported": True, "code_execution": True, "web_search": True},
        "structured_outputs": flag(spec.structured_outputs),
        "thinking": {
            "supported": True,
            "types": {"adaptive": modern, "between_tools": modern, "disabled": True, "enabled": True},
        },
    }


class ModelCatalog:
    """The models one emulated workspace can see, newest first; aliases resolve to their model."""

    def __init__(self, specs: Iterable[ModelSpec] = DEFAULT_MODELS) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self.add(specs)

    def add(self, specs: Iterable[ModelSpec]) -> None:
        """Add entries, replacing any with the same ID."""
        for spec in specs:
            self._specs[spec.id] = spec

    def resolve(self, model_id: str) -> ModelSpec | None:
        """The entry an ID or alias names, or None for a model the API does not know."""
        spec = self._specs.get(model_id)
        if spec is not None:
            return spec
        return next((s for s in self._specs.values() if model_id in s.aliases), None)

    def ordered(self) -> list[ModelSpec]:
        """Every entry, most recently released first (ties: the catalogue's order)."""
        return sorted(self._specs.values(), key=lambda s: _epoch(s.released), reverse=True)

    def describe(self, spec: ModelSpec) -> dict[str, Any]:
        """The Models API's `ModelInfo` object for an entry."""
        released = _epoch(spec.released)
        deprecated_at = rfc3339(released + 365 * _DAY) if spec.lifecycle != "active" else None
        return {
            "type": "model",
            "id": spec.id,
            "display_name": spec.display_name,
            "created_at": rfc3339(released),
            "lifecycle": spec.lifecycle,
            "deprecated_at": deprecated_at,
            "retires_at": rfc3339(released + 455 * _DAY) if spec.lifecycle != "active" else None,
            "line": spec.line,
            "max_input_tokens": spec.max_input_tokens,
            "max_tokens": spec.max_tokens,
            "capabilities": _capabilities(spec),
        }

    def page(
        self, *, limit: int, after_id: str | None, before_id: str | None, lifecycles: Iterable[str] = ()
    ) -> dict[str, Any]:
        """One page of the list, in the API's envelope; raises ValueError on a bad limit or lifecycle."""
        if not 1 <= limit <= 1000:
            raise ValueError("limit: Input should be between 1 and 1000")
        wanted = tuple(lifecycles) or ("active", "deprecated")
        bad = [w for w in wanted if w not in LIFECYCLES]
        if bad:
            raise ValueError(f"lifecycle: Input should be one of {LIFECYCLES}, not {bad[0]!r}")
        specs = [s for s in self.ordered() if s.lifecycle in wanted]
        ids = [s.id for s in specs]
        if after_id is not None:
            start = ids.index(after_id) + 1 if after_id in ids else len(ids)
            chosen, has_more = specs[start : start + limit], start + limit < len(specs)
        elif before_id is not None:
            end = ids.index(before_id) if before_id in ids else 0
            chosen, has_more = specs[max(0, end - limit) : end], end - limit > 0
        else:
            chosen, has_more = specs[:limit], limit < len(specs)
        return {
            "data": [self.describe(s) for s in chosen],
            "has_more": has_more,
            "first_id": chosen[0].id if chosen else None,
            "last_id": chosen[-1].id if chosen else None,
        }


__all__ = ["DEFAULT_MODELS", "LIFECYCLES", "ModelCatalog", "ModelSpec"]
