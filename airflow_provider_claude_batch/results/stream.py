"""The results stage's I/O shell: a batch's results stream, received as chunks.

Everything else in `results/` is pure (bytes in, rows and verdicts out); this is where the socket
is read and the raw copy written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from airflow_provider_claude_batch.exceptions import ResultsMismatchError

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator
    from contextlib import AbstractContextManager
    from types import TracebackType

    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

# Bytes read at a time from a local copy of the results (output/prefetch.py, output/kept.py).
RECEIVE_CHUNK_BYTES = 1 << 18


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

    Received in the thread that folds the chunks, between folds: the socket's buffer keeps the server
    sending meanwhile, and the chunks come as the HTTP library reads them (no re-chunking copy). One
    thread for both keeps the GIL from going back and forth at every socket read, which on two busy
    cores cost more than the overlap of a receiving thread gained.
    """

    def __init__(self, hook: ClaudeBatchHook | ResultsSource, batch: MessageBatch, raw: RawCopy) -> None:
        self._hook, self._batch, self._raw = hook, batch, raw
        self._chunks: Generator[bytes, None, None] | None = None

    def __enter__(self) -> Iterator[bytes]:
        self._chunks = self._receive()
        return self._chunks

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._chunks is not None:  # after an error in the fold: the response is closed now, not later
            self._chunks.close()

    def _receive(self) -> Generator[bytes, None, None]:
        with self._hook.open_results(self._batch) as response:
            for chunk in response.iter_bytes(None):
                self._raw.write(chunk)
                yield chunk


def is_retryable_stream_error(exc: Exception) -> bool:
    """Whether reading the stream again from the start may help: a broken or short stream, a 5xx."""
    import anthropic
    import httpx2

    return isinstance(
        exc, IncompleteResults | ResultsMismatchError | httpx2.TransportError | anthropic.APIConnectionError
    ) or (isinstance(exc, anthropic.APIStatusError) and exc.status_code >= 500)
