"""Cache warm-up: one Messages call per shared prefix writes the cache before the batch is created.

Batches read the cache best-effort, and requests that start together all miss it and write it; a
warm-up call (``max_tokens=1``, at the standard price) writes each shared prefix first, so the
batch's requests can read it from the start. Its usage is recorded with the submission (so a retry
that re-attaches does not pay for it again) and priced in the manifest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.requests.caching import CachePlan

log = logging.getLogger(__name__)
WARMUP_CUSTOM_ID = "cache-warmup-{number}"
_COUNTS = (
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cache_read_tokens", "cache_read_input_tokens"),
)


def warm_cache(hook: ClaudeBatchHook, plan: CachePlan) -> dict[str, Any]:
    """Send each prefix's warm-up call; returns what to record: calls made and failed, usage per model.

    A call that fails is logged and passed over (the batch then writes that prefix itself): the
    warm-up saves money, it never stops a submission.
    """
    usage_by_model: dict[str, dict[str, int]] = {}
    calls = failed = 0
    calls_to_make = [(p, p.warmup_params) for p in plan.prefixes if p.warmup_params is not None]
    for number, (prefix, params) in enumerate(calls_to_make):
        try:
            message = hook.create_message(params, custom_id=WARMUP_CUSTOM_ID.format(number=number))
        except Exception as exc:
            failed += 1
            log.warning("Cache warm-up call %d (%s, %s) failed: %s", number, prefix.model, prefix.block, exc)
            continue
        calls += 1
        usage = message.get("usage") or {}
        counts = usage_by_model.setdefault(message.get("model") or prefix.model, _zero_usage())
        counts["requests"] += 1
        for name, field in _COUNTS:
            counts[name] += usage.get(field) or 0
        split = usage.get("cache_creation") or {}
        if split:
            counts["cache_write_5m_tokens"] += split.get("ephemeral_5m_input_tokens") or 0
            counts["cache_write_1h_tokens"] += split.get("ephemeral_1h_input_tokens") or 0
        else:
            counts["cache_write_5m_tokens"] += usage.get("cache_creation_input_tokens") or 0
    log.info("Cache warm-up: %d Messages call(s) wrote the shared prefixes (%d failed)", calls, failed)
    return {"calls": calls, "failed": failed, "usage_by_model": usage_by_model}


def _zero_usage() -> dict[str, int]:
    return dict.fromkeys(
        (
            "requests",
            "input_tokens",
            "output_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "cache_read_tokens",
        ),
        0,
    )
