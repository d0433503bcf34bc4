"""Submit a prepared input as one or more batches, recording each step so nothing is paid twice.

The flow for every planned batch ("part"):
1. already has a batch ID in the record: re-attach (a retry, a clear, a backfill re-run);
2. has an intent but no ID (a worker died, or a create's answer was lost): look for the batch that
   create made (newest batches, created after the intent, same request count) and adopt it;
3. otherwise record the intent, create once (no SDK retries), record the ID. On a lost answer,
   look before trying again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.exceptions import (
    BatchApiRefusedError,
    BatchInputError,
    ClaudeBatchError,
)
from airflow_provider_claude_batch.hooks.api_errors import describe_api_error, retry_after
from airflow_provider_claude_batch.submit.policy import CreatePolicy
from airflow_provider_claude_batch.submit.record import (
    Claim,
    PartRecord,
    SubmissionRecord,
    TaskKey,
    claim_is_stale,
    matches_part,
    part_claim,
    successor_claim,
)
from airflow_provider_claude_batch.wait.events import total_requests

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.requests.plan import BatchPlan
    from airflow_provider_claude_batch.requests.prepare import PreparedRequests
    from airflow_provider_claude_batch.submit.store import RecordStore

log = logging.getLogger(__name__)


class Submitter:
    """Creates each planned batch of a record exactly once: re-attach, adopt a lost create, or create."""

    def __init__(
        self,
        hook: ClaudeBatchHook,
        ledger: RecordStore,
        policy: CreatePolicy = CreatePolicy(),  # noqa: B008  (frozen: shared safely)
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.hook = hook
        self.ledger = ledger
        self.policy = policy
        self.sleep = sleep
        self.attempt_id = ""

    def open_record(
        self,
        key: TaskKey,
        prepared: PreparedRequests,
        plans: list[BatchPlan],
        *,
        force_resubmit: bool,
        attempt_id: str,
        estimate: dict[str, Any] | None = None,
    ) -> SubmissionRecord:
        """The record to continue: the existing one for the same input, or a new one.

        `force_resubmit` starts anew once per task attempt (`attempt_id`, the task instance's id,
        new on every try and clear): an attempt resumed after a queue wait continues its record.
        Of concurrent attempts starting a record, one wins the claim and the others continue its record.
        """
        self.attempt_id = attempt_id
        existing = self.ledger.load(key)
        forced = force_resubmit and (existing is None or existing.attempt_id != attempt_id)
        if existing is not None and prepared.recognises(existing.fingerprint) and not forced:
            done = existing.batch_ids
            log.info(
                "Re-attaching to the submission recorded for this task instance (%d of %d batches created: %s)",
                len(done),
                len(existing.parts),
                ", ".join(done) or "none yet",
            )
            return existing
        record = SubmissionRecord.new(
            key, prepared.fingerprint, plans, prepared.custom_ids, attempt_id=attempt_id, estimate=estimate
        )
        previous = existing.identity if existing is not None else None
        rival, won = self._win_or_wait(
            key,
            lambda g: successor_claim(existing) + f"-gen-{g}",
            done=lambda r: r is not None and r.identity != previous,
        )
        if rival is not None:
            if not prepared.recognises(rival.fingerprint):
                raise ClaudeBatchError(
                    f"Another attempt of this task instance started a submission for a different input at the same "
                    f"time (record in {self.ledger.location}); nothing was created by this attempt."
                )
            log.warning(
                "Another attempt of this task instance started this submission at the same time; "
                "continuing its record instead of creating"
            )
            return rival
        if existing is not None and existing.batch_ids:
            why = "force_resubmit=True" if forced else "the input changed since the last submission"
            log.warning(
                "Submitting anew because %s; the earlier batches %s are left as they are (not canceled)",
                why,
                ", ".join(existing.batch_ids),
            )
        with self._released_on_error(key, won):
            self.ledger.save(record)
        return record

    @contextlib.contextmanager
    def _released_on_error(self, key: TaskKey, claim_name: str) -> Iterator[None]:
        """Give a claim back when this attempt fails cleanly (the next try need not wait for it to go stale);
        a worker that dies (SystemExit, a kill) keeps it until `claim_stale_seconds`.
        """
        try:
            yield
        except Exception:
            try:
                self.ledger.release(key, claim_name, self.attempt_id)
            except Exception as exc:
                log.warning(
                    "Could not give back the claim %s (%s); a retry waits for it to go stale", claim_name, _short(exc)
                )
            raise

    def _win_or_wait(
        self, key: TaskKey, claim_name: Callable[[int], str], done: Callable[[SubmissionRecord | None], bool]
    ) -> tuple[SubmissionRecord | None, str]:
        """Win claim `claim_name(g)` (None, its name), or wait for its holder to make `done(record)` true (that
        record, "").

        A holder silent for `claim_stale_seconds` is taken for dead: generation g+1 is claimed, by
        one waiter only, the same way.
        """
        generation = 0
        while True:
            holder = self.ledger.claim(key, claim_name(generation), Claim(self.attempt_id, time.time()))
            if holder.holder == self.attempt_id:
                return None, claim_name(generation)
            log.info("Attempt %s holds the claim %s; waiting for its outcome", holder.holder, claim_name(generation))
            while True:
                record = self.ledger.load(key)
                if done(record):
                    return record, ""
                if claim_is_stale(holder, record, time.time(), self.policy.claim_stale_seconds):
                    break
                self.sleep(self.policy.claim_poll_seconds)
            log.warning(
                "Attempt %s has written nothing for %.0f s; taking over its claim %s",
                holder.holder,
                self.policy.claim_stale_seconds,
                claim_name(generation),
            )
            generation += 1

    def submit_part(
        self, record: SubmissionRecord, part: PartRecord, prepared: PreparedRequests, plan: BatchPlan
    ) -> SubmissionRecord:
        """Make sure `part` has a batch: adopt the one a lost create made, or create it."""
        if part.batch_id:
            return record
        if part.intent_at is not None:
            # A create was sent and its outcome never recorded. Give it the same time to show up in
            # the listing as a lost answer gets, counted from when it was sent.
            found = self._find_created(part, record, part.intent_at + self.policy.reconcile_seconds)
            if found is not None:
                log.warning(
                    "Adopting batch %s, created for part %d by an earlier attempt whose answer was lost",
                    found.id,
                    part.index,
                )
                return self._saved(record.with_batch(part.index, found.id, found.created_at.timestamp(), adopted=True))
        identity, index = record.identity, part.index
        rival, won = self._win_or_wait(
            record.key,
            lambda g: part_claim(record, index, g),
            done=lambda r: r is not None and r.identity == identity and r.parts[index].batch_id is not None,
        )
        if rival is not None:
            log.warning(
                "Batch %s for part %d was created by another attempt of this task instance running at "
                "the same time; using it",
                rival.parts[index].batch_id,
                index,
            )
            return rival
        latest = self.ledger.load(record.key)
        if latest is not None and latest.identity == identity:
            if latest.parts[index].batch_id:
                return latest
            record = latest
        taken_over = record.parts[index]
        if not won.endswith("-gen-0") and taken_over.intent_at is not None:
            # The attempt we took over from sent a create after the search above: one more look.
            found = self._find_created(taken_over, record, time.time())
            if found is not None:
                log.warning(
                    "Adopting batch %s, created for part %d by the attempt whose claim was taken over", found.id, index
                )
                with self._released_on_error(record.key, won):
                    return self._saved(record.with_batch(index, found.id, found.created_at.timestamp(), adopted=True))
        with self._released_on_error(record.key, won):
            return self._create_part(record, record.parts[index], prepared, plan)

    def _create_part(
        self, record: SubmissionRecord, part: PartRecord, prepared: PreparedRequests, plan: BatchPlan
    ) -> SubmissionRecord:
        """Record the intent and create, up to `policy.attempts` times, looking before each retry of a lost answer."""
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
                        log.warning(
                            "The create answer for part %d was lost (%s); adopting batch %s it made",
                            part.index,
                            _short(exc),
                            found.id,
                        )
                        return self._saved(
                            record.with_batch(part.index, found.id, found.created_at.timestamp(), adopted=True)
                        )
                if attempt == self.policy.attempts:
                    raise ClaudeBatchError(
                        f"Could not create batch {part.index + 1} of {len(record.parts)} after {attempt} attempts "
                        f"({_short(exc)}). Already created: {', '.join(record.batch_ids) or 'none'}. A retry of "
                        "the task re-attaches to those and looks for this one before creating it."
                    ) from exc
                log.warning(
                    "Create of part %d failed (%s); no batch was made; trying again in %.0f s",
                    part.index,
                    _short(exc),
                    wait,
                )
                self.sleep(wait)
                continue
            log.info(
                "Created batch %s (part %d of %d, %d requests, %.1f MB)",
                batch.id,
                part.index + 1,
                len(record.parts),
                part.request_count,
                part.body_bytes / 1e6,
            )
            return self._saved(record.with_batch(part.index, batch.id, batch.created_at.timestamp()))
        raise AssertionError("unreachable")

    def save(self, record: SubmissionRecord) -> SubmissionRecord:
        """Save a step done outside the create flow (the cache warm-up), keeping concurrent batch IDs."""
        return self._saved(record)

    def _saved(self, record: SubmissionRecord) -> SubmissionRecord:
        """Save `record`, keeping batch IDs a concurrent attempt recorded meanwhile (never lose an ID)."""
        current = self.ledger.load(record.key)
        if current is not None and current.identity == record.identity:
            record = record.merged_with(current)
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
            raise BatchInputError(
                f"The API refused the batch ({exc.status_code} {exc.type}: {exc.api_message}); "
                f"nothing was created for it.{made}"
            ) from exc
        if exc.status_code in (401, 403):
            raise BatchApiRefusedError(
                f"The API refused the key ({exc.status_code} {exc.type}); nothing was created for this part.",
                record.batch_ids,
            ) from exc
        if exc.status_code == 429 and exc.error_code == "enforced_spend_limit_reached":
            raise ClaudeBatchError(
                f"The organization's monthly spend cap is reached; nothing was created.{made}"
            ) from exc
        wait = retry_after(exc) or self.policy.backoff_seconds
        return exc.status_code >= 500 and exc.status_code != 529, wait

    def _find_created(self, part: PartRecord, record: SubmissionRecord, look_until: float) -> MessageBatch | None:
        """The batch an earlier create made for `part`, if the API lists one by `look_until` (epoch)."""
        if part.intent_at is None:  # only a part whose create was sent can have made a batch
            return None
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
            if matches_part(
                part, request_total=total, created_at=created, since=since, claimed=claimed, batch_id=batch.id
            ):
                matches.append(batch)
        return min(matches, key=lambda b: b.created_at) if matches else None


def _short(exc: BaseException) -> str:
    return describe_api_error(exc) if hasattr(exc, "status_code") else f"{type(exc).__name__}: {exc}"
