"""Submit a prepared input as one or more batches, recording each step so nothing is paid twice.

The flow for every planned batch ("part"):
1. already has a batch ID in the record: re-attach (a retry, a clear, a backfill re-run);
2. has an intent but no ID (a worker died, or a create's answer was lost): look for the batch that
   create made (newest batches, created after the intent, same request count) and adopt it;
3. otherwise record the intent, create once (no SDK retries), record the ID. On a lost answer,
   look before trying again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.api_errors import describe_api_error, retry_after
from airflow_provider_claude_batch.batch.events import total_requests
from airflow_provider_claude_batch.batch.ledger import PartRecord, SubmissionRecord, TaskKey, matches_part
from airflow_provider_claude_batch.exceptions import BatchApiRefusedError, BatchInputError, ClaudeBatchError
from airflow_provider_claude_batch.storage import read_bytes_if_exists, write_atomically

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import ObjectStoragePath
    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.batch.requests import BatchPlan, PreparedRequests
    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

log = logging.getLogger(__name__)
RECORD_NAME = "submission.json"


class SubmissionLedger:
    """Submission records under one root on object storage, one file per task instance."""

    def __init__(self, root: ObjectStoragePath, record_name: str = RECORD_NAME) -> None:
        self.root = root
        self.record_name = record_name

    def folder(self, key: TaskKey) -> ObjectStoragePath:
        return self.root / key.relative_path()

    def path(self, key: TaskKey) -> ObjectStoragePath:
        return self.folder(key) / self.record_name

    def for_round(self, round_number: int) -> SubmissionLedger:
        """The ledger of a follow-up round: its own record next to the first one."""
        name = RECORD_NAME if round_number == 0 else f"submission-round-{round_number}.json"
        return SubmissionLedger(self.root, name)

    def load(self, key: TaskKey) -> SubmissionRecord | None:
        data = read_bytes_if_exists(self.path(key))
        return SubmissionRecord.from_json(data) if data is not None else None

    def save(self, record: SubmissionRecord) -> None:
        write_atomically(self.path(record.key), record.to_json())


@dataclasses.dataclass(frozen=True)
class CreatePolicy:
    """How hard to try a create, and how to look for a batch whose create answer was lost."""

    attempts: int = 3
    reconcile_seconds: float = 60.0
    reconcile_poll_seconds: float = 5.0
    clock_skew_seconds: float = 300.0
    backoff_seconds: float = 5.0


class Submitter:
    def __init__(self, hook: ClaudeBatchHook, ledger: SubmissionLedger, policy: CreatePolicy = CreatePolicy(),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.hook = hook
        self.ledger = ledger
        self.policy = policy
        self.sleep = sleep

    def open_record(self, key: TaskKey, prepared: PreparedRequests, plans: list[BatchPlan], *,
                    force_resubmit: bool, attempt_id: str) -> SubmissionRecord:
        """The record to continue: the existing one for the same input, or a new one.

        `force_resubmit` starts anew once per task attempt (`attempt_id`, the task instance's id,
        new on every try and clear): an attempt resumed after a queue wait continues its record.
        """
        existing = self.ledger.load(key)
        forced = force_resubmit and (existing is None or existing.attempt_id != attempt_id)
        if existing is not None and prepared.recognises(existing.fingerprint) and not forced:
            done = existing.batch_ids
            log.info("Re-attaching to the submission recorded for this task instance (%d of %d batches created: %s)",
                     len(done), len(existing.parts), ", ".join(done) or "none yet")
            return existing
        if existing is not None and existing.batch_ids:
            why = "force_resubmit=True" if forced else "the input changed since the last submission"
            log.warning("Submitting anew because %s; the earlier batches %s are left as they are (not canceled)",
                        why, ", ".join(existing.batch_ids))
        record = SubmissionRecord.new(key, prepared.fingerprint, plans, prepared.custom_ids, attempt_id=attempt_id)
        self.ledger.save(record)
        return record

    def submit_part(self, record: SubmissionRecord, part: PartRecord, prepared: PreparedRequests,
                    plan: BatchPlan) -> SubmissionRecord:
        """Make sure `part` has a batch: adopt the one a lost create made, or create it."""
        if part.batch_id:
            return record
        if part.intent_at is not None:
            # A create was sent and its outcome never recorded. Give it the same time to show up in
            # the listing as a lost answer gets, counted from when it was sent.
            found = self._find_created(part, record, part.intent_at + self.policy.reconcile_seconds)
            if found is not None:
                log.warning("Adopting batch %s, created for part %d by an earlier attempt whose answer was lost",
                            found.id, part.index)
                return self._saved(record.with_batch(part.index, found.id, found.created_at.timestamp(), adopted=True))
        for attempt in range(1, self.policy.attempts + 1):
            record = self._saved(record.with_intent(part.index, time.time()))
            part = record.parts[part.index]
            try:
                batch = self.hook.create_batch_streamed(prepared.iter_body(plan.first, plan.stop), plan.body_bytes)
            except Exception as exc:
                outcome_unknown, wait = self._classify_create_error(exc, record)
                if outcome_unknown:
                    found = self._find_created(part, record, time.time() + self.policy.reconcile_seconds)
                    if found is not None:
                        log.warning("The create answer for part %d was lost (%s); adopting batch %s it made",
                                    part.index, _short(exc), found.id)
                        return self._saved(
                            record.with_batch(part.index, found.id, found.created_at.timestamp(), adopted=True))
                if attempt == self.policy.attempts:
                    raise ClaudeBatchError(
                        f"Could not create batch {part.index + 1} of {len(record.parts)} after {attempt} attempts "
                        f"({_short(exc)}). Already created: {', '.join(record.batch_ids) or 'none'}. A retry of "
                        "the task re-attaches to those and looks for this one before creating it.") from exc
                log.warning("Create of part %d failed (%s); no batch was made; trying again in %.0f s",
                            part.index, _short(exc), wait)
                self.sleep(wait)
                continue
            log.info("Created batch %s (part %d of %d, %d requests, %.1f MB)", batch.id, part.index + 1,
                     len(record.parts), part.request_count, part.body_bytes / 1e6)
            return self._saved(record.with_batch(part.index, batch.id, batch.created_at.timestamp()))
        raise AssertionError("unreachable")

    def _saved(self, record: SubmissionRecord) -> SubmissionRecord:
        self.ledger.save(record)
        return record

    def _classify_create_error(self, exc: Exception, record: SubmissionRecord) -> tuple[bool, float]:
        """(could the batch exist anyway?, how long to wait before trying again); raises when retrying is wrong."""
        import anthropic

        if isinstance(exc, anthropic.APIConnectionError):  # includes timeouts: the server may have made it
            return True, self.policy.backoff_seconds
        if not isinstance(exc, anthropic.APIStatusError):
            raise exc
        made = f" Batches already created for this input: {', '.join(record.batch_ids)}." if record.batch_ids else ""
        if exc.status_code in (400, 413, 422):
            raise BatchInputError(f"The API refused the batch ({exc.status_code} {exc.type}: {exc.api_message}); "
                                  f"nothing was created for it.{made}") from exc
        if exc.status_code in (401, 403):
            raise BatchApiRefusedError(f"The API refused the key ({exc.status_code} {exc.type}); nothing was "
                                       "created for this part.", record.batch_ids) from exc
        if exc.status_code == 429 and exc.error_code == "enforced_spend_limit_reached":
            raise ClaudeBatchError(
                f"The organization's monthly spend cap is reached; nothing was created.{made}") from exc
        wait = retry_after(exc) or self.policy.backoff_seconds
        return exc.status_code >= 500 and exc.status_code != 529, wait

    def _find_created(self, part: PartRecord, record: SubmissionRecord, look_until: float) -> MessageBatch | None:
        """The batch an earlier create made for `part`, if the API lists one by `look_until` (epoch)."""
        assert part.intent_at is not None
        since = part.intent_at - self.policy.clock_skew_seconds
        claimed = set(record.batch_ids)
        while True:
            try:
                found = self._list_created_since(part, since, claimed)
            except Exception as exc:
                log.warning("Could not list batches to look for part %d (%s)", part.index, _short(exc))
                found = None
            if found is not None or time.time() >= look_until:
                return found
            self.sleep(self.policy.reconcile_poll_seconds)

    def _list_created_since(self, part: PartRecord, since: float, claimed: set[str]) -> MessageBatch | None:
        matches = []
        for batch in self.hook.iter_batches(page_size=100):
            created = batch.created_at.timestamp()
            if created < since:
                break
            total = total_requests(batch.request_counts)
            if matches_part(part, request_total=total, created_at=created, since=since, claimed=claimed,
                            batch_id=batch.id):
                matches.append(batch)
        return min(matches, key=lambda b: b.created_at) if matches else None


def _short(exc: BaseException) -> str:
    return describe_api_error(exc) if hasattr(exc, "status_code") else f"{type(exc).__name__}: {exc}"
