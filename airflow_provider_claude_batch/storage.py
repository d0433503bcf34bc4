"""Small object-storage helpers on Airflow's ObjectStoragePath: read if present, write atomically.

A reader must never see half a file. On local storage that means writing a hidden temporary next
to the target and renaming it over; object stores (S3, GCS, Azure) publish an object only when
its upload completes, so a direct write is already all-or-nothing.
"""

from __future__ import annotations

import errno
import os
import secrets
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import ObjectStoragePath


def as_path(location: str | os.PathLike[str] | ObjectStoragePath, conn_id: str | None = None) -> ObjectStoragePath:
    """A path, URL or ObjectStoragePath as an ObjectStoragePath (a bare path is a local file)."""
    from airflow.sdk import ObjectStoragePath

    if isinstance(location, ObjectStoragePath):
        return location
    text = os.fspath(location)
    if "://" not in text:
        text = "file://" + os.path.abspath(text)
    return ObjectStoragePath(text, conn_id=conn_id) if conn_id else ObjectStoragePath(text)


def is_local(path: ObjectStoragePath) -> bool:
    """Whether `path` is on this machine's disk (renames are atomic there; uploads elsewhere)."""
    return path.protocol in ("file", "local", "")


def read_bytes_if_exists(path: ObjectStoragePath, attempts: int = 5) -> bytes | None:
    """The whole object, or None if absent. An object replaced while it was read (s3fs `FileExpired`,
    errno EBUSY: another attempt saved it meanwhile) is read again, from the start.
    """
    for attempt in range(1, attempts + 1):
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == attempts:
                raise
            if hasattr(path.fs, "invalidate_cache"):
                path.fs.invalidate_cache(str(path.path))
    raise AssertionError("unreachable")


def write_atomically(path: ObjectStoragePath, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old content or the new, never a part."""
    if is_local(path):
        target = path.path
        directory = os.path.dirname(target)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(6)}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def binary_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The lines of an open binary file, by readline: Airflow 3.0's ObjectStoragePath file wrapper has
    no __iter__, so `for line in handle` fails there.
    """
    return iter(handle.readline, b"")
