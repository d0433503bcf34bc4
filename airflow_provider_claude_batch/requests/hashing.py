"""The requests stage's I/O shell: `prepare_requests` is the pure `prepare` with the fingerprint hashed
on a second thread while the lines that follow are checked, instead of adding its time after (about
0.4 s per 100 MB on a CPU without SHA instructions).
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.defaults import API_MAX_BODY_BYTES, API_MAX_REQUESTS
from airflow_provider_claude_batch.requests.prepare import RequestDefaults, prepare
from airflow_provider_claude_batch.requests.spill import SpillFile

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_provider_claude_batch.requests.prepare import JsonlSource, PreparedRequests, Problem

_BACKGROUND_HASH_BYTES = 1 << 16  # below this, a thread costs more than the hashing it would overlap


def prepare_requests(
    entries: Iterable[tuple[int, object]] | JsonlSource,
    defaults: RequestDefaults = RequestDefaults(),  # noqa: B008  (frozen: shared safely)
    *,
    max_body_bytes: int = API_MAX_BODY_BYTES,
    spill_above: int | None = None,
    spill_above_requests: int = API_MAX_REQUESTS,
) -> tuple[PreparedRequests, list[Problem], int]:
    """`prepare` (validate, serialize once, fingerprint), hashing on a second thread; no thread outlives it.

    An input of more than one batch (over `spill_above` bytes, default `max_body_bytes`, or
    `spill_above_requests` requests) waits in a temporary spill file (requests/spill.py): memory bounded.
    """
    hasher = BackgroundSha256()
    try:
        return prepare(
            entries,
            defaults,
            max_body_bytes=max_body_bytes,
            hasher=hasher,
            spill=SpillFile,
            spill_above=max_body_bytes if spill_above is None else spill_above,
            spill_above_requests=spill_above_requests,
        )
    finally:
        hasher.close()


class BackgroundSha256:
    """sha256 fed piece by piece on a second thread (hashlib releases the GIL).

    One piece in flight at a time, in order: the digest is that of one sha256 over all the pieces.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def update(self, data: bytes | bytearray, /) -> None:
        """Hash `data` after the piece in flight: on this thread if it is small, else on a new one."""
        self._wait()
        if len(data) < _BACKGROUND_HASH_BYTES:
            self._hash.update(data)
            return
        self._thread = threading.Thread(target=self._run, args=(data,), name="fingerprint", daemon=True)
        self._thread.start()

    def hexdigest(self) -> str:
        """The digest of every piece, once the one in flight is hashed."""
        self._wait()
        return self._hash.hexdigest()

    def close(self) -> None:
        """Wait for the piece in flight, so no thread outlives the call that started it."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, data: bytes | bytearray) -> None:
        try:
            self._hash.update(data)
        except BaseException as exc:  # re-raised in the caller's thread by _wait
            self._error = exc

    def _wait(self) -> None:
        self.close()
        if self._error is not None:
            raise self._error
