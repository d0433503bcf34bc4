"""How a submission waits for its canary batch (``canary_requests``) before creating the rest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.requests.prepared import PreparedRequests
    from airflow_provider_claude_batch.submit.record import SubmissionRecord
    from airflow_provider_claude_batch.wait.waiting import Deferrable, Waiting

log = logging.getLogger(__name__)

# The method every submitting operator resumes with once its canary batch ended (`CanaryWait`).
CANARY_RESUME_METHOD = "execute_after_canary"


@dataclass(frozen=True)
class CanaryWait:
    """How a submission waits for its canary batch: the task's wait step, and the method it resumes with."""

    waiting: Waiting
    resume_with: str

    def check(
        self, task: Deferrable, hook: ClaudeBatchHook, record: SubmissionRecord, prepared: PreparedRequests
    ) -> None:
        """Wait for the canary (part 0) to end, then fail the task if its requests failed for their own reasons."""
        from airflow_provider_claude_batch.preflight.run import check_canary

        canary = record.parts[0]
        if canary.batch_id is None:
            raise ValueError("the canary is created before the rest")
        log.info("Waiting for the canary batch %s (%d requests) before the rest", canary.batch_id, canary.request_count)
        self.waiting.wait(task, hook, [canary.batch_id], [canary.created_at], resume_with=self.resume_with)
        check_canary(hook, canary.batch_id, prepared, canary.request_count)
