"""The requests stage's spill file: where a large input's serialized items wait for their batch's create.

An unnamed temporary file (removed when closed, or when the worker exits), written once in order and
read back with `os.pread` a megabyte at a time, so the worker holds about one batch's body, not the
input's (requests/prepare.py decides when to spill).
"""

from __future__ import annotations

import os
import tempfile


class SpillFile:
    """An append-only temporary file of items (requests/prepare.py's `Spill`)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="claude-batch-requests-")  # noqa: SIM115  (closed by `close`)
        self._written = 0

    def write(self, data: bytes | bytearray, /) -> None:
        """Append `data` (unbuffered: the bytes leave the process's memory)."""
        view = memoryview(data)
        while view:
            done = os.write(self._file.fileno(), view)
            view = view[done:]
        self._written += len(data)

    def read(self, offset: int, size: int, /) -> bytes:
        """`size` bytes from `offset`, all written before."""
        if offset < 0 or offset + size > self._written:
            raise ValueError(f"bytes [{offset}, {offset + size}) were not written (only {self._written})")
        pieces = []
        while size > 0:
            piece = os.pread(self._file.fileno(), size, offset)
            if not piece:
                raise OSError(f"the spill file ended early at {offset}")
            pieces.append(piece)
            offset += len(piece)
            size -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        """Remove the file."""
        self._file.close()
