"""The spend-control settings a submitting task is given, checked when the DAG is parsed (pure)."""

from __future__ import annotations

from airflow_provider_claude_batch.defaults import API_MAX_REQUESTS


def check_spend_settings(preflight: bool, max_cost_usd: float | None, canary_requests: int) -> None:
    """Refuse spend-control settings that cannot work, when the task is defined."""
    if max_cost_usd is not None:
        if isinstance(max_cost_usd, bool) or not isinstance(max_cost_usd, int | float) or not max_cost_usd > 0:
            raise ValueError(f"max_cost_usd is a positive number of dollars, not {max_cost_usd!r}")
        if not preflight:
            raise ValueError("max_cost_usd needs preflight=True: the cost estimate it is held to comes from preflight")
    if isinstance(canary_requests, bool) or not isinstance(canary_requests, int) or canary_requests < 0:
        raise ValueError(f"canary_requests is a number of requests (0 for no canary), not {canary_requests!r}")
    if canary_requests > API_MAX_REQUESTS:
        raise ValueError(f"canary_requests must be at most {API_MAX_REQUESTS} (one batch)")
