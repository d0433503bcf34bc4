"""Resubmission rounds: submit (or take given batches), wait, land, and resubmit what is worth retrying.

`Rounds` composes the three steps for the one-task operator and for the results operator with
``max_retry_rounds``. It walks the rounds from the first on every run: a round with a record
re-attaches, a landed round is re-used, and the first open one goes on (deferring while it runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.operators.links import BATCH_IDS_XCOM_KEY

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.output.landing import Landing, Manifest
    from airflow_provider_claude_batch.requests.plan import BatchPlan
    from airflow_provider_claude_batch.requests.prepare import PreparedRequests
    from airflow_provider_claude_batch.results.checks import ExpectedResults
    from airflow_provider_claude_batch.submit.record import SubmissionRecord
    from airflow_provider_claude_batch.submit.store import RecordStore
    from airflow_provider_claude_batch.submit.submission import Submission
    from airflow_provider_claude_batch.wait.waiting import Deferrable, Waiting

# A round's batches, when each was created (None: unknown), and what their results must hold.
RoundBatches = tuple[list[str], list[float | None], dict[str, "ExpectedResults"]]
RESUME_METHOD = "resume"
QUEUE_RESUME_METHOD = "execute_after_queue_wait"


@dataclass
class Rounds:
    """Up to `max_retry_rounds` follow-up rounds after round 0 (submitted here, or `given` batches)."""

    task: Deferrable
    hook: ClaudeBatchHook
    submission: Submission
    waiting: Waiting
    landing: Landing
    output: ObjectStoragePath
    max_retry_rounds: int
    on_batches: Callable[[list[str]], None]
    given: list[str] | None = None
    given_record: SubmissionRecord | None = None
    retry_invalid_output: bool = False
    estimate: dict[str, Any] | None = None  # preflight's, for round 0 (shown beside the actual cost)
    # Round 0's cache warm-up, from its submission record: priced into round 0's manifest.
    warmup: dict[str, Any] | None = None

    def run(self, context: Context) -> tuple[Manifest, list[str]]:
        """Walk every round; returns the final manifest over the rounds and every batch ID."""
        from airflow_provider_claude_batch.output.landing import landed_manifest
        from airflow_provider_claude_batch.output.rounds import finalize_rounds, read_rows, round_folder
        from airflow_provider_claude_batch.results.rounds import retry_ids

        self.landing.refuse_unwritable_round_formats()
        store = self.submission.record_store(context)
        prepared, plans = self.submission.prepare(context, self.hook)
        prices = self.landing.settings().prices  # a price table that cannot price is refused before the first create
        if self.given is None:
            self.estimate = self.submission.check_before_spend(self.hook, store, context, prepared, prices=prices)
        elif self.given_record is not None:
            self.estimate = self.given_record.estimate
        manifests: list[Manifest] = []
        all_ids: list[str] = []
        chosen = prepared
        invalid_retried: set[str] | None = set() if self.retry_invalid_output else None
        for number in range(self.max_retry_rounds + 1):
            if number:
                plans = self.submission.plan(chosen, canary=False)
            batch_ids, created, expected = self._round_batches(context, store, number, chosen, plans)
            all_ids += [b for b in batch_ids if b not in all_ids]
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=all_ids)
            self.on_batches(batch_ids)
            folder = round_folder(self.output, number)
            manifest = landed_manifest(folder, batch_ids)
            if manifest is None:
                # A batch canceled outside Airflow is landed with its canceled rows, not retried.
                self.waiting.wait(
                    self.task, self.hook, batch_ids, created, resume_with=RESUME_METHOD, land_canceled=True
                )
                warmup = self.warmup if number == 0 else None
                manifest = self.landing.land_round(
                    self.hook, batch_ids, folder, within=self.output, expected=expected, warmup=warmup
                )
            manifests.append(manifest)
            again = retry_ids(read_rows(folder / "failures.jsonl"), invalid_retried)
            if not self._another_round(number, again):
                break
            chosen = _subset(prepared, again)
        del prepared, chosen
        manifest = finalize_rounds(self.output, manifests, self.landing.formats, time.time(), self.estimate)
        return manifest, all_ids

    def _round_batches(
        self,
        context: Context,
        store: RecordStore,
        number: int,
        chosen: PreparedRequests,
        plans: list[BatchPlan],
    ) -> RoundBatches:
        """The round's batches: the given ones for round 0, else those its record has (created as needed)."""
        from airflow_provider_claude_batch.results.checks import expected_from_record

        if number == 0 and self.given is not None:
            # The input given here is the submit task's; where it was split the same way, check exactly.
            self.warmup = self.given_record.warmup if self.given_record is not None else None
            return self.given, [None], expected_from_record(self.given_record, chosen.custom_ids, plans)
        from airflow_provider_claude_batch.submit.submission import CANARY_RESUME_METHOD, CanaryWait

        force = self.submission.force_resubmit and number == 0
        submitter, record = self.submission.open(
            self.hook,
            store.for_round(number),
            context,
            chosen,
            plans,
            force_resubmit=force,
            estimate=self.estimate if number == 0 else None,
        )
        record = self.submission.submit_parts(
            self.task,
            submitter,
            record,
            chosen,
            plans,
            on_part=lambda done: self.on_batches(done.batch_ids),
            resume_with=QUEUE_RESUME_METHOD,
            error_budget=self.waiting.policy.error_budget,
            canary=CanaryWait(self.waiting, CANARY_RESUME_METHOD) if number == 0 else None,
        )
        if number == 0:
            self.warmup = record.warmup
        created = [p.created_at for p in record.parts]
        return record.batch_ids, created, expected_from_record(record, chosen.custom_ids, plans)

    def _another_round(self, number: int, again: list[str]) -> bool:
        """Whether the failures worth retrying go to round `number + 1` (logged either way)."""
        if not again:
            return False
        if number == self.max_retry_rounds:
            self.hook.log.warning(
                "%d requests still failed for retryable reasons after %d retry round(s); they are reported as failed",
                len(again),
                self.max_retry_rounds,
            )
            return False
        self.hook.log.info(
            "Round %d: %d requests failed for reasons worth retrying (server errors, overload, "
            "expiry%s); submitting them again as round %d",
            number,
            len(again),
            ", an output that did not validate" if self.retry_invalid_output else "",
            number + 1,
        )
        return True


def _subset(prepared: PreparedRequests, custom_ids: list[str]) -> PreparedRequests:
    """The requests to resubmit; the input at hand must hold every one that failed."""
    from airflow_provider_claude_batch.exceptions import BatchInputError

    try:
        return prepared.subset(custom_ids)
    except KeyError as exc:
        raise BatchInputError(
            f"The input given for resubmission lacks requests that failed: {exc}; "
            "give the same input as the submit task."
        ) from None
