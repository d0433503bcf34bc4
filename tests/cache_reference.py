"""A plain reference for automatic cache breakpoints (requests/caching.py is the fast path): blocks as
Python objects, prefixes compared as lists, no hashing, no arrays, no splicing. Where each request's
breakpoint goes, by custom_id (None: untouched).
"""

from __future__ import annotations

from typing import Any

import msgspec

from airflow_provider_claude_batch.requests.caching import estimate_tokens, minimum_cacheable_tokens


def blocks(params: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(path, what it is part of, the block) in prefix order."""
    found: list[tuple[str, str, Any]] = [(f"tools[{i}]", "tools", t) for i, t in enumerate(params.get("tools") or [])]
    system = params.get("system")
    if isinstance(system, str):
        found.append(("system", "system", system))
    elif system is not None:
        found += [(f"system[{i}]", "system", b) for i, b in enumerate(system)]
    context = ("context", params.get("tool_choice"), params.get("thinking"))
    for n, message in enumerate(params["messages"]):
        content = message["content"]
        part = repr((context, message["role"])) if n == 0 else repr(message["role"])
        if isinstance(content, str):
            found.append((f"messages[{n}].content", part, content))
        else:
            found += [(f"messages[{n}].content[{i}]", part if i == 0 else "M", b) for i, b in enumerate(content)]
    return found


def key(entry: tuple[str, str, Any]) -> tuple[str, bytes]:
    return entry[1], msgspec.json.encode(entry[2])


def breakpoints(requests: list[dict[str, Any]]) -> dict[str, str | None]:
    """custom_id -> the path of its breakpoint's block."""
    chosen: dict[str, str | None] = {}
    eligible = [r for r in requests if b'"cache_control"' not in msgspec.json.encode(r)]
    for request in requests:
        chosen[request["custom_id"]] = None
    for request in eligible:
        params = request["params"]
        mine = blocks(params)
        minimum = minimum_cacheable_tokens(params["model"])
        longest = 0
        for other in eligible:
            if other is request or _cache_key(other["params"]) != _cache_key(params):
                continue
            theirs = blocks(other["params"])
            common = 0
            while common < min(len(mine), len(theirs)) and key(mine[common]) == key(theirs[common]):
                common += 1
            longest = max(longest, common)
        sizes = [len(msgspec.json.encode(b[2])) for b in mine]
        for at in range(longest - 1, -1, -1):
            if estimate_tokens(sum(sizes[: at + 1])) < minimum:
                break
            block = mine[at][2]
            if isinstance(block, str) or (
                isinstance(block, dict) and block.get("type") not in ("thinking", "redacted_thinking")
            ):
                chosen[request["custom_id"]] = mine[at][0]
                break
    return chosen


def _cache_key(params: dict[str, Any]) -> tuple[str, bytes]:
    """What a cache entry's key holds besides the blocks: requests differing in it share no entry."""
    return params["model"], msgspec.json.encode(params.get("output_config"))
