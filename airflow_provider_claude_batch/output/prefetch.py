"""Landing several batches at once: the results of the next batches are downloaded to local staging
files while the current one is folded, then folded from disk in order (output/land.py).

Folding is Python and runs one batch at a time; the downloads are socket and disk I/O and overlap it.
At most `concurrency - 1` batches are fetched ahead, each streamed to its file a chunk at a time, so
memory does not grow with the number of batches or results (disk holds at most that many copies
ahead). A download that failed is not an error here: its batch is read from the API as without
prefetching, with the same retries and checks.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.results.stream import RECEIVE_CHUNK_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterator, Sequence

    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

log = logging.getLogger(__name__)


class LocalResults:
    """A downloaded results file, served as the API's response would be (`iter_bytes`)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The file's bytes in chunks of `chunk_size` (default RECEIVE_CHUNK_BYTES)."""
        with open(self.path, "rb") as file:
            while chunk := file.read(chunk_size or RECEIVE_CHUNK_BYTES):
                yield chunk


class Prefetcher:
    """Downloads the results of the batches after the one being folded (up to `ahead` of them).

    Used as the results source of `ResultsReceiver`: `open_results` serves a batch from its file when
    its download completed, else from the API. Each file is removed once its batch was read.
    """

    def __init__(
        self,
        hook: ClaudeBatchHook,
        batches: Sequence[MessageBatch],
        ahead: int,
        path_for: Callable[[str], str],
        skip: Collection[str] = (),
    ) -> None:
        self._hook = hook
        self._batches = list(batches)
        self._skip = set(skip)  # read from elsewhere (kept from an earlier landing)
        self._ahead = ahead
        self._path_for = path_for
        self._pool = ThreadPoolExecutor(max_workers=max(1, ahead), thread_name_prefix="results-prefetch")
        self._fetches: dict[str, Future[str | None]] = {}
        self._stopped = False

    def reading(self, index: int) -> None:
        """Batch `index` is being folded now: start the downloads of the `ahead` batches after it."""
        for batch in self._batches[index + 1 : index + 1 + self._ahead]:
            if batch.id not in self._fetches and batch.id not in self._skip:
                self._fetches[batch.id] = self._pool.submit(self._download, batch)

    def _download(self, batch: MessageBatch) -> str | None:
        path = self._path_for(batch.id)
        try:
            with self._hook.open_results(batch) as response, open(path, "wb") as file:
                for chunk in response.iter_bytes(RECEIVE_CHUNK_BYTES):
                    if self._stopped:
                        return None
                    file.write(chunk)
        except Exception as exc:  # read again from the API when its turn comes, with the usual retries
            log.info("Prefetching the results of batch %s failed (%s); they will be read when folded", batch.id, exc)
            return None
        return path

    @contextmanager
    def open_results(self, batch: MessageBatch) -> Iterator[LocalResults | object]:
        """Batch `batch`'s results: from its downloaded file (once, then removed), else from the API."""
        fetch = self._fetches.pop(batch.id, None)
        path = fetch.result() if fetch is not None else None
        if path is None:
            with self._hook.open_results(batch) as response:
                yield response
            return
        try:
            yield LocalResults(path)
        finally:
            os.unlink(path)

    def close(self) -> None:
        """Stop the downloads in flight and remove their files (on success nothing is left)."""
        self._stopped = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for fetch in self._fetches.values():
            path = fetch.result() if fetch.done() and not fetch.cancelled() else None
            if path is not None and os.path.exists(path):
                os.unlink(path)
        self._fetches.clear()
