"""Is a landed stream what was submitted? The checks on batch IDs, retention and result custom_ids.

Pure: IDs, counts and digests in, a verdict (or one clear error) out. The submission record says what
each batch was given (`expected_from_record`); `SeenIds` and `results_mismatch` compare a stream with it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.exceptions import BatchInputError, ResultsArchivedError
from airflow_provider_claude_batch.results.totals import EXAMPLES_KEPT

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.requests.plan import BatchPlan
    from airflow_provider_claude_batch.results.fold import TableRow
    from airflow_provider_claude_batch.submit.record import SubmissionRecord

log = logging.getLogger(__name__)
# What a batch ID must look like before it names a file: the API's prefix, then letters, digits
# and '_' (the emulator's IDs have one), any length; never '/', '.', '%' or whitespace.
BATCH_ID_PATTERN = re.compile(r"msgbatch_[A-Za-z0-9][A-Za-z0-9_]*")
RESULTS_RETENTION_SECONDS = 29 * 86400


def custom_ids_digest(custom_ids: Iterable[str]) -> str:
    """sha256 over the sorted custom_ids: the same for a batch's requests and its results in any order.

    Kept per batch in the submission record (64 characters however many requests), so landing can
    tell that a stream holds exactly the submitted custom_ids without keeping them.
    """
    digest = hashlib.sha256()
    for custom_id in sorted(custom_ids):
        digest.update(custom_id.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def valid_batch_id(batch_id: object) -> bool:
    """Whether `batch_id` is the API's shape, and so safe in a file name, a request path or a link."""
    return isinstance(batch_id, str) and BATCH_ID_PATTERN.fullmatch(batch_id) is not None


@dataclass(frozen=True)
class ExpectedResults:
    """What one batch's stream must hold: `count` results, one per submitted custom_id.

    `custom_ids_sha256` (from the submission record) or `custom_ids` (when the input is at hand)
    say which ones; with neither, only duplicates and the count can be checked.
    """

    count: int
    custom_ids_sha256: str | None = None
    custom_ids: Sequence[str] | None = None

    @property
    def checked_against(self) -> str:
        """What the manifest says each custom_id was checked against."""
        if self.custom_ids is not None:
            return "input"
        return "submission record" if self.custom_ids_sha256 is not None else "request counts"


class SeenIds:
    """The custom_ids of one batch's stream so far, duplicates noted as blocks of rows arrive.

    Memory: one set of the batch's custom_ids (at most 100,000 by the API's limit; about 10 MB
    for 64-character IDs), dropped once the batch is checked.
    """

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.results = 0
        self.duplicates: list[str] = []

    def add(self, rows: Sequence[TableRow]) -> None:
        """Note the custom_ids of a block of rows, and any seen before."""
        ids = [row.custom_id for row in rows]
        self.results += len(ids)
        if not self.ids.isdisjoint(ids):
            self.duplicates += [i for i in ids if i in self.ids][:EXAMPLES_KEPT]
        before = len(self.ids)
        self.ids.update(ids)
        if len(self.ids) - before != len(ids):  # a custom_id twice within this block
            counted: dict[str, int] = {}
            for custom_id in ids:
                counted[custom_id] = counted.get(custom_id, 0) + 1
            self.duplicates += [i for i, n in counted.items() if n > 1][:EXAMPLES_KEPT]


def results_mismatch(batch_id: str, seen: SeenIds, expected: ExpectedResults) -> str | None:
    """Why the stream is not exactly one result per submitted custom_id, or None when it is."""
    distinct = len(seen.ids)
    problems = []
    if seen.results != distinct:
        problems.append(f"{seen.results - distinct} duplicated (e.g. {_examples(seen.duplicates)})")
    missing: list[str] = []
    unknown: list[str] = []
    if expected.custom_ids is not None:
        missing = [c for c in expected.custom_ids if c not in seen.ids]
        if missing or distinct != len(expected.custom_ids):
            unknown = sorted(seen.ids.difference(expected.custom_ids))
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {_examples(missing)})")
    elif distinct < expected.count:
        problems.append(f"{expected.count - distinct} missing")
    if unknown:
        problems.append(f"{len(unknown)} not submitted in this batch (e.g. {_examples(unknown)})")
    elif distinct > expected.count:
        problems.append(f"{distinct - expected.count} more custom_ids than requests")
    if (
        not problems
        and expected.custom_ids is None
        and expected.custom_ids_sha256 is not None
        and custom_ids_digest(seen.ids) != expected.custom_ids_sha256
    ):
        problems.append("the custom_ids are not the submitted ones (their sha256 differs from the submission record's)")
    if not problems:
        return None
    return (
        f"the results of batch {batch_id} do not match what was submitted: {expected.count} requests, "
        f"{seen.results} results for {distinct} distinct custom_ids; " + "; ".join(problems)
    )


def _examples(custom_ids: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in list(dict.fromkeys(custom_ids))[:EXAMPLES_KEPT])


def check_batch_ids(batch_ids: Sequence[str]) -> None:
    """Batch IDs name files under the output and go into request paths, trigger kwargs and Console links:
    refuse any that is not the API's shape, before any call.
    """
    bad = [b for b in batch_ids if not valid_batch_id(b)]
    if bad:
        raise BatchInputError(
            f"Not a Message Batch ID: {', '.join(repr(b) for b in bad[:5])}. IDs look like msgbatch_ followed by "
            "letters, digits and underscores; nothing was asked of the API."
        )


def expected_from_record(
    record: SubmissionRecord | None, custom_ids: Sequence[str] | None = None, plans: Sequence[BatchPlan] = ()
) -> dict[str, ExpectedResults]:
    """What each recorded batch's results must hold: its count and custom_ids' sha256, and the custom_ids
    themselves when the input at hand was split as the record says (a view of its custom_ids: read per batch).
    """
    expected: dict[str, ExpectedResults] = {}
    for part in record.parts if record is not None else ():
        if part.batch_id is None:
            continue
        plan = plans[part.index] if part.index < len(plans) else None
        exact = None
        if (
            custom_ids is not None
            and plan is not None
            and plan.request_count == part.request_count
            and custom_ids[plan.first] == part.first_custom_id
            and custom_ids[plan.stop - 1] == part.last_custom_id
        ):
            view = getattr(custom_ids, "view", None)  # an IdColumn: read when checked, not all held at once
            exact = view(plan.first, plan.stop) if view is not None else custom_ids[plan.first : plan.stop]
        expected[part.batch_id] = ExpectedResults(part.request_count, part.custom_ids_sha256, exact)
    return expected


def check_retention(batch: MessageBatch, warning_seconds: float, now: float) -> None:
    """Fail at once for archived results (no retry can help); warn when the deadline is near."""
    created = batch.created_at.timestamp()
    archived_at = batch.archived_at.timestamp() if batch.archived_at else created + RESULTS_RETENTION_SECONDS
    if batch.archived_at is not None or now >= archived_at:
        raise ResultsArchivedError(
            f"The results of batch {batch.id} (created {utc_iso(created)}) were archived on {utc_iso(archived_at)}, "
            "29 days after creation, and can no longer be downloaded. Land results well before that.",
            [batch.id],
        )
    if now >= archived_at - warning_seconds:
        log.warning(
            "The results of batch %s expire on %s (%.1f days from now): land them now",
            batch.id,
            utc_iso(archived_at),
            (archived_at - now) / 86400,
        )


def utc_iso(epoch: float) -> str:
    """An instant as the manifest and the messages write it: ISO 8601 in UTC, with a `Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
