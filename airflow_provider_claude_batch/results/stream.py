"""The results stage's I/O shell: a batch's results stream, received in a thread as chunks.

Everything else in `results/` is pure (bytes in, rows and verdicts out); this is where the socket
is read and the raw copy written.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_claude_batch.exceptions import ResultsMismatchError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AbstractContextManager
    from types import TracebackType

    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

RECEIVE_CHUNK_BYTES = 1 << 18
# Chunks received but not yet parsed: a bound on memory (about 1 MB), not a tuning knob.
RECEIVED_CHUNKS_AHEAD = 4


class RawCopy(Protocol):
    """Where the stream's bytes are kept as served (a staged file)."""

    def write(self, data: bytes) -> None:
        """Append `data`."""


class ResultsSource(Protocol):
    """Where a batch's results stream is opened: the hook, or output/prefetch.py's downloads."""

    def open_results(self, batch: MessageBatch) -> AbstractContextManager[Any]:
        """The unread results response (with `iter_bytes`)."""


class IncompleteResults(Exception):
    """The stream ended before every submitted request had its result: read it again."""


class ResultsReceiver:
    """The results stream in chunks as received, each written to the raw copy first.

    A thread receives, writes and hashes the raw copy (socket reads, file writes and sha256 let go of
    the GIL) while the caller parses the chunks before: the two overlap on two cores, and the server
    is not kept waiting while a chunk is parsed. At most RECEIVED_CHUNKS_AHEAD chunks wait, so memory
    stays flat however many results there are.
    """

    def __init__(self, hook: ClaudeBatchHook | ResultsSource, batch: MessageBatch, raw: RawCopy) -> None:
        self._hook, self._batch, self._raw = hook, batch, raw
        # A chunk, the error that ended the stream, or None at its end.
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=RECEIVED_CHUNKS_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name=f"results-{batch.id}", daemon=True)

    def __enter__(self) -> Iterator[bytes]:
        self._thread.start()
        return self._chunks()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        # Normally the thread has already finished; after an error here it stops at its next chunk.
        self._stop.set()
        self._thread.join(timeout=30)

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _receive(self) -> None:
        try:
            with self._hook.open_results(self._batch) as response:
                for chunk in response.iter_bytes(RECEIVE_CHUNK_BYTES):
                    self._raw.write(chunk)
                    if not self._put(chunk):
                        return
            self._put(None)
        except BaseException as exc:  # handed to the parsing side, which raises it (or retries)
            self._put(exc)

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def is_retryable_stream_error(exc: Exception) -> bool:
    """Whether reading the stream again from the start may help: a broken or short stream, a 5xx."""
    import anthropic
    import httpx2

    return isinstance(
        exc, IncompleteResults | ResultsMismatchError | httpx2.TransportError | anthropic.APIConnectionError
    ) or (isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 500)
