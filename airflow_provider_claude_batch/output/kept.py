"""Batches a landing already read in full, kept on local disk until it publishes: a re-run after a
crash reads them from there instead of downloading them again.

A batch's raw copy is kept (a hard link to the staged file, else a copy) once its stream passed every
check; the next landing into the same output serves it as the API would (output/land.py checks it
again all the same) and removes the folder once it has published. The folder is hidden: for local
output beside the files (`.claude-batch-landed-<key>`), for remote output in the local temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.output.prefetch import LocalResults
from airflow_provider_claude_batch.results.stream import IncompleteResults

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.sdk import ObjectStoragePath
    from anthropic.types.messages import MessageBatch

KEPT_PREFIX = ".claude-batch-landed-"


class KeptResults:
    """The kept raw copies of one output's batches (a results source for `ResultsReceiver`)."""

    def __init__(self, output: ObjectStoragePath, local: bool) -> None:
        key = hashlib.sha256(str(output).encode()).hexdigest()[:16]
        self.folder = os.path.join(output.path if local else tempfile.gettempdir(), KEPT_PREFIX + key)

    def _path(self, batch_id: str) -> str:
        return os.path.join(self.folder, f"{batch_id}.jsonl")

    def has(self, batch_id: str) -> bool:
        """Whether an earlier landing read this batch in full."""
        return os.path.isfile(self._path(batch_id))

    def keep(self, batch_id: str, raw_path: str) -> None:
        """Keep the batch's checked raw copy (whole or not at all: written aside, then renamed)."""
        os.makedirs(self.folder, exist_ok=True)
        target = self._path(batch_id)
        aside = target + ".partial"
        if os.path.exists(aside):
            os.unlink(aside)
        try:
            os.link(raw_path, aside)
        except OSError:  # another filesystem, or no hard links there
            shutil.copyfile(raw_path, aside)
        os.replace(aside, target)

    @contextmanager
    def open_results(self, batch: MessageBatch) -> Iterator[LocalResults]:
        """The batch's kept results, served as the API's response would be; gone meanwhile (another attempt
        published and removed them), the landing's retry reads the API.
        """
        path = self._path(batch.id)
        if not os.path.isfile(path):
            raise IncompleteResults(f"the kept results of batch {batch.id} were removed meanwhile")
        yield LocalResults(path)

    def clear(self) -> None:
        """Forget every kept batch (the landing published)."""
        shutil.rmtree(self.folder, ignore_errors=True)
