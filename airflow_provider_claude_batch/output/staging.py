"""Staged files, published whole and the manifest last: the output stage's file I/O.

Everything is first written to a staging area (a hidden folder next to local output, or a local
temporary folder for remote output), then published file by file: a local rename, or one upload
per object (object stores publish an object only when its upload completes). A kill at any point
leaves the previous complete files, or none, and nothing a reader could take for results.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from airflow_provider_claude_batch.exceptions import BatchInputError
from airflow_provider_claude_batch.output.manifest import MANIFEST_NAME, FileInfo
from airflow_provider_claude_batch.storage import is_local

if TYPE_CHECKING:
    from collections.abc import Sequence
    from hashlib import _Hash

    from airflow.sdk import ObjectStoragePath

STAGING_PREFIX = ".claude-batch-staging-"
# A published file's bytes are handed to the disk every this many bytes, as they are written.
WRITEBACK_BYTES = 8 << 20


class Sink:
    """A staging file that counts its bytes, and hashes and fsyncs them if it is published.

    It is hashed as it is written, so no published file is ever read back to hash it, and its bytes are
    sent to disk as they come (`_write_back`), so that the fsync that publishing waits for is short.
    """

    def __init__(self, path: str, name: str, *, published: bool = True) -> None:
        self.path = path
        self.name = name
        self.handle: BinaryIO = open(path, "wb")  # noqa: SIM115  (closed in close())
        self.published = published
        self.hash = hashlib.sha256()
        self.size = 0
        self.rows = 0
        self._written_back = 0

    def write(self, data: bytes) -> None:
        """Append `data` (and hash it, if the file is published)."""
        self.handle.write(data)
        self.size += len(data)
        if self.published:
            self.hash.update(data)
            if self.size - self._written_back >= WRITEBACK_BYTES:
                self._write_back()

    def _write_back(self) -> None:
        """Have the kernel start writing the bytes since the last call to disk, without waiting for it
        (fsync in close() still waits for every byte; this only starts the work early). Where the
        hint is missing (not Linux or another POSIX system), close() does all of it.
        """
        if hasattr(os, "posix_fadvise"):
            self.handle.flush()
            start = self._written_back
            # A filesystem that refuses the hint lands as without it: close() syncs every byte either way.
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.handle.fileno(), start, self.size - start, os.POSIX_FADV_DONTNEED)
        self._written_back = self.size

    def write_rows(self, data: bytes, count: int) -> None:
        """Append `count` rows, encoded as `data`."""
        self.write(data)
        self.rows += count

    def mark(self) -> SinkMark:
        """Where the file is now, to roll back to."""
        return SinkMark(self.size, self.rows, self.hash.copy())

    def rollback(self, mark: SinkMark) -> None:
        """Forget everything written since `mark`: bytes, rows and hash, as if never written."""
        self.handle.seek(mark.size)
        self.handle.truncate()
        self.size, self.rows, self.hash = mark.size, mark.rows, mark.hash.copy()
        self._written_back = min(self._written_back, mark.size)

    def close(self) -> None:
        """Close the file, synced to disk first if it is to be published (closing twice is harmless)."""
        if self.handle.closed:
            return
        if self.published:
            self.handle.flush()
            os.fsync(self.handle.fileno())
        self.handle.close()

    def info(self, rows: int | None = None) -> FileInfo:
        """The manifest's entry for this file (`rows`, when counted elsewhere, instead of its own)."""
        return FileInfo(self.name, self.size, self.hash.hexdigest(), self.rows if rows is None else rows)


@dataclass(frozen=True)
class SinkMark:
    """A Sink's length, rows and hash at one moment."""

    size: int
    rows: int
    hash: _Hash


class Staging:
    """Where files are written before they are published to `output`."""

    def __init__(self, output: ObjectStoragePath, within: ObjectStoragePath | None = None) -> None:
        self.output = output
        self.local = is_local(output)
        if self.local:
            # Where the user's path itself leads is the user's choice; below it, nothing may lead out.
            self.boundary = os.path.realpath((within or output).path)
            os.makedirs(output.path, exist_ok=True)
            self._check_inside(output.path)
            _sweep_stale_staging(output.path)
            self.root = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output.path)
            self._check_inside(self.root)
        else:
            self.root = tempfile.mkdtemp(prefix=STAGING_PREFIX)

    def _check_inside(self, path: str) -> None:
        resolved = os.path.realpath(path)
        if resolved != self.boundary and not resolved.startswith(self.boundary + os.sep):
            raise BatchInputError(
                f"{path} leads out of the output folder {self.boundary} (to {resolved}, through a "
                "symlink); remove the link. Nothing was published."
            )

    def file(self, name: str) -> str:
        """The staging path of the file to be published as `name` (its folder made)."""
        path = os.path.join(self.root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def sink(self, name: str, *, published: bool = True) -> Sink:
        """A new staged file, to be published as `name` (or only read back, if not `published`)."""
        return Sink(self.file(name), name, published=published)

    def publish(self, names: Sequence[str], manifest: bytes) -> None:
        """Every file first, the manifest last: a reader that sees the manifest sees complete files."""
        with open(self.file(MANIFEST_NAME), "wb") as handle:
            handle.write(manifest)
        if self.local:  # every target checked before the first is published
            for name in [*names, MANIFEST_NAME]:
                self._check_inside(os.path.join(self.output.path, name))
        for name in [*names, MANIFEST_NAME]:
            source = os.path.join(self.root, name)
            if self.local:
                target = os.path.join(self.output.path, name)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(source, target)
            else:
                _upload(source, self.output / name)

    def cleanup(self) -> None:
        """Remove the staging area and whatever is left in it."""
        shutil.rmtree(self.root, ignore_errors=True)


def _upload(source: str, target: ObjectStoragePath) -> None:
    """One object per file; on failure the upload is discarded, so no partial object appears."""
    # The filesystem's own file object, not ObjectStoragePath's wrapper: discarding must reach it.
    handle = target.fs.open(target.path, mode="wb")
    try:
        with open(source, "rb") as data:
            shutil.copyfileobj(data, handle, 8 << 20)
    except BaseException:
        discard = getattr(handle, "discard", None)
        if discard is not None:
            discard()
            handle.closed = True  # fsspec would otherwise try to flush the discarded buffer
        raise
    handle.close()


def _sweep_stale_staging(directory: str, older_than: float = 3600.0) -> None:
    """Staging left by a killed run is hidden, and removed by the next run once it is an hour old."""
    cutoff = time.time() - older_than
    for entry in os.scandir(directory):
        if entry.name.startswith(STAGING_PREFIX) and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry.path, ignore_errors=True)
