"""Submission records on object storage (local, S3, GCS, Azure): one file per task instance, claims beside it."""

from __future__ import annotations

import os
import secrets
import time
from typing import TYPE_CHECKING

import msgspec

from airflow_provider_claude_batch.defaults import CLAIM_SETTLE_SECONDS
from airflow_provider_claude_batch.exceptions import SubmissionRecordError
from airflow_provider_claude_batch.storage import is_local, read_bytes_if_exists, write_atomically
from airflow_provider_claude_batch.submit.record import Claim, SubmissionRecord, TaskKey
from airflow_provider_claude_batch.submit.store import DELETE_WARNING, settled_claim

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import ObjectStoragePath

RECORD_NAME = "submission.json"


class PathRecordStore:
    """Submission records under one root on object storage, one file per task instance (a `RecordStore`).

    Claims are files next to the record: created with O_EXCL on local disk (atomic, no timing
    assumption); elsewhere written, left to settle and read back (`settled_claim`), since
    ObjectStoragePath offers no conditional put.
    """

    def __init__(
        self,
        root: ObjectStoragePath,
        record_name: str = RECORD_NAME,
        *,
        settle_seconds: float = CLAIM_SETTLE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.root = root
        self.record_name = record_name
        self.settle_seconds = settle_seconds
        self.sleep = sleep

    @property
    def location(self) -> str:
        """Where the records are, for messages."""
        return str(self.root)

    def folder(self, key: TaskKey) -> ObjectStoragePath:
        """The task instance's folder (the record, its claims, the decorator's stored input)."""
        return self.root / key.relative_path()

    def path(self, key: TaskKey) -> ObjectStoragePath:
        """The task instance's record file."""
        return self.folder(key) / self.record_name

    def for_round(self, round_number: int) -> PathRecordStore:
        """The ledger of a follow-up round: its own record next to the first one."""
        name = RECORD_NAME if round_number == 0 else f"submission-round-{round_number}.json"
        return PathRecordStore(self.root, name, settle_seconds=self.settle_seconds, sleep=self.sleep)

    def load(self, key: TaskKey) -> SubmissionRecord | None:
        """The task instance's record, or None when it has none; an unreadable one raises."""
        path = self.path(key)
        try:
            data = read_bytes_if_exists(path)
        except PermissionError as exc:
            raise SubmissionRecordError(
                f"The submission record {path} cannot be read ({exc}): give the workers read "
                f"and write access to it. {DELETE_WARNING}"
            ) from exc
        if data is None:
            return None
        try:
            return SubmissionRecord.from_json(data)
        except (ValueError, KeyError, TypeError) as exc:  # msgspec.DecodeError is a ValueError
            raise SubmissionRecordError(
                f"The submission record {path} is unreadable ({exc}). Compare it with the API's batch list and "
                f"repair it, or pass force_resubmit=True to submit anew on purpose. {DELETE_WARNING}"
            ) from exc

    def save(self, record: SubmissionRecord) -> None:
        """Write the record atomically (readers see the old one or the new one)."""
        write_atomically(self.path(record.key), record.to_json())

    def _claim_path(self, key: TaskKey, name: str) -> ObjectStoragePath:
        return self.folder(key) / "claims" / f"{self.record_name.removesuffix('.json')}.{name}.json"

    def release(self, key: TaskKey, name: str, holder: str) -> None:
        """Give claim `name` back if `holder` holds it."""
        path = self._claim_path(key, name)
        data = read_bytes_if_exists(path)
        if data is not None and Claim.from_dict(msgspec.json.decode(data)).holder == holder:
            path.unlink()

    def claim(self, key: TaskKey, name: str, mine: Claim) -> Claim:
        """The holder of claim `name`: `mine` if this call won it (a conditional create where the store has one)."""
        path = self._claim_path(key, name)
        if is_local(path):
            return _claim_local_file(path.path, mine)

        def read() -> Claim | None:
            data = read_bytes_if_exists(path)
            return Claim.from_dict(msgspec.json.decode(data)) if data is not None else None

        def write(claim: Claim) -> None:
            write_atomically(path, msgspec.json.encode(claim.to_dict()))

        return settled_claim(read, write, mine, self.settle_seconds, self.sleep)


def _claim_local_file(target: str, mine: Claim) -> Claim:
    """Create `target` holding `mine` only if absent (O_EXCL on a fully written temporary, via link)."""
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
    with open(temporary, "xb") as handle:
        handle.write(msgspec.json.encode(mine.to_dict()))
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, target)  # atomic, fails if the target exists: readers never see a half-written claim
        return mine
    except FileExistsError:
        with open(target, "rb") as handle:
            return Claim.from_dict(msgspec.json.decode(handle.read()))
    finally:
        os.unlink(temporary)
