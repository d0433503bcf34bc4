"""How a create is tried: a frozen policy the operators take at DAG parse time, so it imports nothing heavy."""

from __future__ import annotations

import dataclasses

from airflow_provider_claude_batch.defaults import CLAIM_SETTLE_SECONDS


@dataclasses.dataclass(frozen=True)
class CreatePolicy:
    """How hard to try a create, how to look for a batch whose create answer was lost, and how
    concurrent attempts of one task instance agree on which of them creates.
    """

    attempts: int = 3
    reconcile_seconds: float = 60.0
    reconcile_poll_seconds: float = 5.0
    clock_skew_seconds: float = 300.0
    backoff_seconds: float = 5.0
    # A claim on a store without conditional writes is won after this long without a rival write.
    claim_settle_seconds: float = CLAIM_SETTLE_SECONDS
    # An attempt holding a claim that has written nothing for this long is taken for dead.
    claim_stale_seconds: float = 900.0
    claim_poll_seconds: float = 2.0
