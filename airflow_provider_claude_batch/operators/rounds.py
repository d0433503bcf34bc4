"""Resubmission rounds: submit (or take given batches), wait, land, and resubmit what is worth retrying.

`Rounds` composes the three steps for the one-task operator and for the results operator with
``max_retry_rounds``. It walks the rounds from the first on every run: a round with a record
re-attaches, a landed round is re-used, and the first open one goes on (deferring while it runs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_claude_batch.operators.links import BATCH_IDS_XCOM_KEY
from airflow_provider_claude_batch.sync.routing import Routing

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook
    from airflow_provider_claude_batch.output.landing import Landing, Manifest
    from airflow_provider_claude_batch.output.manifest import Json
    from airflow_provider_claude_batch.requests.plan import BatchPlan
    from airflow_provider_claude_batch.requests.prepare import PreparedRequests
    from airflow_provider_claude_batch.results.checks import ExpectedResults
    from airflow_provider_claude_batch.submit.record import SubmissionRecord
    from airflow_provider_claude_batch.submit.store import RecordStore
    from airflow_provider_claude_batch.submit.submission import Submission
    from airflow_provider_claude_batch.wait.deadline import SwitchPlan
    from airflow_provider_claude_batch.wait.events import WaitOutcome
    from airflow_provider_claude_batch.wait.waiting import Deferrable, Waiting

# A round's batches, when each was created (None: unknown), and what their results must hold.
RoundBatches = tuple[list[str], list[float | None], dict[str, "ExpectedResults"]]
RESUME_METHOD = "resume"
# Written in a round's folder before the deadline guard cancels its batches: the cancel was deliberate.
GUARD_FILE = "_deadline_guard.json"
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
    routing: Routing = field(default_factory=Routing)
    # A deferred wait that ended at its deadline (the guard's switch time, or the wait's own limit).
    timed_out: WaitOutcome | None = None

    def run(self, context: Context) -> tuple[Manifest, list[str]]:
        """Walk every round; returns the final manifest over the rounds and every batch ID.

        With a guarded deadline (`Routing`), a batch round still running at its switch time is canceled
        and landed, and what it did not finish goes to a last round sent through the Messages API.
        """
        from airflow_provider_claude_batch.output.landing import landed_manifest
        from airflow_provider_claude_batch.output.rounds import finalize_rounds, read_rows, round_folder
        from airflow_provider_claude_batch.results.rounds import retry_ids

        self.landing.refuse_unwritable_round_formats()
        store = self.submission.record_store(context)
        prepared, plans = self.submission.prepare(context, self.hook)
        prices = self.landing.settings().prices  # a price table that cannot price is refused before the first create
        deadline_at, first_look = self.routing.resolve_deadline(context, self.output / "rounds")
        route: str = self.routing.first_route(len(prepared))
        if first_look:
            self._check_deadline(deadline_at, len(prepared), route)
        if self.given is None:
            self.estimate = self.submission.check_before_spend(
                self.hook, store, context, prepared, prices=prices, standard_price=route == "sync"
            )
        elif self.given_record is not None:
            self.estimate = self.given_record.estimate
        manifests: list[Manifest] = []
        all_ids: list[str] = []
        chosen = prepared
        invalid_retried: set[str] | None = set() if self.retry_invalid_output else None
        number = 0
        while True:
            folder = round_folder(self.output, number)
            if route == "sync":
                manifests.append(landed_manifest(folder, []) or self._sync_round(chosen, folder, deadline_at))
                break
            if number:
                plans = self.submission.plan(chosen, canary=False)
            switch = self.routing.switch_plan(deadline_at, len(chosen))
            batch_ids, created, expected = self._round_batches(context, store, number, chosen, plans)
            all_ids += [b for b in batch_ids if b not in all_ids]
            context["ti"].xcom_push(key=BATCH_IDS_XCOM_KEY, value=all_ids)
            self.on_batches(batch_ids)
            manifest = landed_manifest(folder, batch_ids)
            if manifest is None:
                self._wait(batch_ids, created, switch, folder)
                warmup = self.warmup if number == 0 else None
                manifest = self.landing.land_round(
                    self.hook, batch_ids, folder, within=self.output, expected=expected, warmup=warmup
                )
            manifests.append(manifest)
            if switch is not None:
                again, route = self._after_guarded_round(number, folder, deadline_at)
                if route == "sync":
                    chosen, number = _subset(prepared, again), number + 1
                    continue
            else:
                again = retry_ids(read_rows(folder / "failures.jsonl"), invalid_retried)
            if not self._another_round(number, again):
                break
            chosen, number = _subset(prepared, again), number + 1
        del prepared, chosen
        guard = self._guard_report(deadline_at, len(manifests))
        manifest = finalize_rounds(
            self.output, manifests, self.landing.formats, time.time(), self.estimate, deadline=guard
        )
        return manifest, all_ids

    def _guard_report(self, deadline_at: float | None, rounds: int) -> Json | None:
        """The manifest's ``deadline``: when it was, and each cancel the guard made (from its records)."""
        if deadline_at is None:
            return None
        import msgspec

        from airflow_provider_claude_batch.output.rounds import round_folder
        from airflow_provider_claude_batch.storage import read_bytes_if_exists
        from airflow_provider_claude_batch.wait.deadline import utc_clock

        canceled = []
        for number in range(rounds):
            kept = read_bytes_if_exists(round_folder(self.output, number) / GUARD_FILE)
            if kept is not None:
                canceled.append({"round": number, **msgspec.json.decode(kept)})
        return {"deadline": utc_clock(deadline_at), "sync_fallback": self.routing.sync_fallback, "canceled": canceled}

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
        from airflow_provider_claude_batch.submit.canary import CANARY_RESUME_METHOD, CanaryWait

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

    # ---- the deadline guard and the Messages API route ---------------------------------------------
    def _check_deadline(self, deadline_at: float | None, requests: int, route: str) -> None:
        """Before anything is paid for: refuse a deadline not even the Messages API can meet; log the switch time."""
        from airflow_provider_claude_batch.exceptions import BatchInputError
        from airflow_provider_claude_batch.wait.deadline import utc_clock

        plan = self.routing.switch_plan(deadline_at, requests)
        if plan is None:
            if deadline_at is not None:
                self.hook.log.info("Deadline %s without sync_fallback: the batches are only waited for", deadline_at)
            return
        now = time.time()
        if not plan.meetable(now) and self.given is not None:  # paid for already: land and send what is left
            self.hook.log.warning("The deadline cannot be met even by the Messages API alone: %s", plan.arithmetic())
        elif not plan.meetable(now):
            self.routing.forget_deadline(self.output / "rounds")
            raise BatchInputError(
                f"The deadline cannot be met even by the Messages API alone: {plan.arithmetic()}; from now that "
                f"lands at {utc_clock(now + plan.sync_seconds + plan.landing)}. Move the deadline, raise "
                "sync_concurrency, or set SyncPolicy(request_latency=...) to your measured latency. "
                "Nothing was submitted."
            )
        if route == "batch":
            self.hook.log.info(
                "Deadline %s: requests still unfinished at %s will be sent to the Messages API (%s)",
                utc_clock(plan.deadline),
                utc_clock(plan.switch_at),
                plan.arithmetic(),
            )
        note = plan.guard_note(now)
        if note is not None:
            self.hook.log.info("%s", note)

    def _wait(
        self, batch_ids: list[str], created: list[float | None], switch: SwitchPlan | None, folder: ObjectStoragePath
    ) -> None:
        """Wait for the round's batches to end; with a guard, only until the switch time, then cancel them."""
        from airflow_provider_claude_batch.wait.deadline import utc_clock

        if switch is not None and not switch.switch_due(time.time()):
            if self.timed_out is not None:  # not the guard's timeout: the wait's own, reported as ever
                self.waiting.raise_for_unended(self.hook, self.timed_out)
            self.hook.log.info(
                "Waiting for %d batch(es) until %s at most: requests still unfinished then go to the Messages API",
                len(batch_ids),
                utc_clock(switch.switch_at),
            )
            self.waiting.wait(
                self.task,
                self.hook,
                batch_ids,
                created,
                resume_with=RESUME_METHOD,
                land_canceled=True,
                until=switch.switch_at,
            )
        if switch is not None and switch.switch_due(time.time()):
            self._cancel_for_deadline(batch_ids, folder, switch)
        self.waiting.wait(self.task, self.hook, batch_ids, created, resume_with=RESUME_METHOD, land_canceled=True)

    def _cancel_for_deadline(self, batch_ids: list[str], folder: ObjectStoragePath, switch: SwitchPlan) -> None:
        """Cancel the batches still in progress at the switch time, after writing down why (`GUARD_FILE`).

        A cancel keeps what already succeeded (billed at the batch price); the rest is sent to the
        Messages API once the batch has ended. A failed cancel raises: a retry re-attaches and cancels.
        """
        import msgspec

        from airflow_provider_claude_batch.storage import read_bytes_if_exists, write_atomically
        from airflow_provider_claude_batch.wait.deadline import utc_clock

        running = [b for b in batch_ids if self.hook.retrieve_batch(b).processing_status == "in_progress"]
        if not running:
            return
        marker = folder / GUARD_FILE
        kept = read_bytes_if_exists(marker)
        earlier = msgspec.json.decode(kept)["batch_ids"] if kept else []
        record = {
            "reason": "deadline guard: batches still running at the switch time",
            "deadline": utc_clock(switch.deadline),
            "switch_at": utc_clock(switch.switch_at),
            "canceled_at": utc_clock(time.time()),
            "batch_ids": sorted({*earlier, *running}),
        }
        write_atomically(marker, msgspec.json.format(msgspec.json.encode(record), indent=2))
        for batch_id in running:
            self.hook.cancel_batch(batch_id)
            self.hook.log.warning(
                "Deadline guard: canceled batch %s at the switch time %s (deadline %s); what it finished is "
                "kept at the batch price, the rest goes to the Messages API",
                batch_id,
                utc_clock(switch.switch_at),
                utc_clock(switch.deadline),
            )

    def _after_guarded_round(
        self, number: int, folder: ObjectStoragePath, deadline_at: float | None
    ) -> tuple[list[str], str]:
        """What a guarded round leaves (canceled by the guard, expired, retryable-failed) and where it goes:
        the Messages API once the guard fired, the rounds are spent or another batch would miss the deadline.
        """
        from airflow_provider_claude_batch.output.rounds import read_rows
        from airflow_provider_claude_batch.sync.decide import leftovers

        fired = (folder / GUARD_FILE).exists()
        again = leftovers(read_rows(folder / "failures.jsonl"), guard_canceled=fired)
        plan = self.routing.switch_plan(deadline_at, len(again))
        if not again or plan is None:
            return again, "batch"
        if fired or number >= self.max_retry_rounds or plan.switch_due(time.time()):
            self.hook.log.info(
                "Round %d: %d requests unfinished or failed for retryable reasons go to the Messages API as round %d",
                number,
                len(again),
                number + 1,
            )
            return again, "sync"
        return again, "batch"

    def _sync_round(self, chosen: PreparedRequests, folder: ObjectStoragePath, deadline_at: float | None) -> Manifest:
        """Send `chosen` through the Messages API (answers recorded as they come) and land them as a round."""
        from airflow_provider_claude_batch.output.sync_round import land_sync_round, standard_cost_of_line
        from airflow_provider_claude_batch.sync.decide import SyncBudget
        from airflow_provider_claude_batch.sync.send import SyncSender, request_params

        routing = self.routing
        settings = self.landing.settings()
        prices = settings.prices
        requests = [request_params(chosen.item(i)) for i in range(len(chosen))]
        landing = routing.policy.landing_time.total_seconds()
        sender = SyncSender(
            self.hook,
            folder / "messages",
            routing.sync_concurrency,
            SyncBudget(routing.max_sync_cost_usd),
            cost_of=lambda line: standard_cost_of_line(line, prices),
            stop_retrying_at=None if deadline_at is None else deadline_at - landing,
            max_attempts=routing.policy.max_attempts,
        )
        started = time.monotonic()
        lines = sender.send(requests)
        if sender.sent:
            took = time.monotonic() - started
            self.hook.log.info(
                "Messages API: %d requests answered in %.1f s, %d at a time: %.2f s per request measured "
                "(SyncPolicy(request_latency=...) assumes %.2f s)",
                sender.sent,
                took,
                routing.sync_concurrency,
                took * min(routing.sync_concurrency, sender.sent) / sender.sent,
                routing.policy.request_latency.total_seconds(),
            )
        return land_sync_round(
            folder, lines, chosen.custom_ids, within=self.output, prices=prices, output=settings.output
        )


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
