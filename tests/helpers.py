"""Request builders shared by tests."""

from __future__ import annotations


def message_params(text: str = "Hello", **overrides: object) -> dict[str, object]:
    params: dict[str, object] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": text}],
    }
    params.update(overrides)
    return params


def make_requests(n: int, prefix: str = "req") -> list[dict[str, object]]:
    return [{"custom_id": f"{prefix}-{i}", "params": message_params(f"item {i}")} for i in range(n)]
