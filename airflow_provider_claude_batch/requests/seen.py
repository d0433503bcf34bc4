"""The duplicate custom_id check: every custom_id seen in one pass over the input.

A set while the input fits one batch. Once the input spills (more than one batch: requests/prepared.py)
the set moves to a private temporary SQLite database (stdlib `sqlite3`: an on-disk B-tree with a
bounded page cache, removed when closed), so 10,000,000 custom_ids cost a few megabytes of memory, not
about 90 bytes each. A block of custom_ids is added in one `executemany`, inside a savepoint, so a block
holding a duplicate leaves nothing behind and the per-line road names it (each block is its own
transaction, its rollback journal in memory: a few pages, not the whole input's).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

_CACHE_KIB = 2048  # SQLite's page cache for the check, in KiB (its pages beyond this wait on disk)


class SeenIds:
    """custom_ids seen so far: `fresh` adds a block only if it is all new and distinct."""

    def __init__(self) -> None:
        self._set: set[str] | None = set()
        self._db: sqlite3.Connection | None = None

    @property
    def on_disk(self) -> bool:
        """Whether the check moved to its temporary database."""
        return self._db is not None

    def move_to_disk(self) -> None:
        """Keep the custom_ids in a temporary database from now on (the set's are moved there)."""
        if self._db is not None or self._set is None:
            return
        db = sqlite3.connect("", isolation_level=None, check_same_thread=False)  # "": a private temporary file
        db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        db.execute("PRAGMA journal_mode=MEMORY")  # (a block's rollback journal: its few changed pages)
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE seen (custom_id TEXT PRIMARY KEY) WITHOUT ROWID")
        db.execute("SAVEPOINT moved")
        db.executemany("INSERT INTO seen VALUES (?)", zip(sorted(self._set)))
        db.execute("RELEASE moved")
        self._db, self._set = db, None

    def __contains__(self, custom_id: str) -> bool:
        if self._set is not None:
            return custom_id in self._set
        if self._db is None:
            return False
        return self._db.execute("SELECT 1 FROM seen WHERE custom_id = ?", (custom_id,)).fetchone() is not None

    def add(self, custom_id: str) -> None:
        """Note one custom_id (seen or not)."""
        if self._set is not None:
            self._set.add(custom_id)
        elif self._db is not None:
            self._db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (custom_id,))

    def fresh(self, custom_ids: Sequence[str]) -> bool:
        """Add `custom_ids` and say True if none was seen before and none repeats; else add none, False."""
        if self._set is not None:
            seen = self._set
            if not seen.isdisjoint(custom_ids) or len(set(custom_ids)) != len(custom_ids):
                return False
            seen.update(custom_ids)
            return True
        db = self._db
        if db is None:
            return False
        before = db.total_changes
        db.execute("SAVEPOINT block")
        db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", zip(custom_ids))
        added = db.total_changes - before == len(custom_ids)
        if not added:
            db.execute("ROLLBACK TO block")
        db.execute("RELEASE block")
        return added

    def close(self) -> None:
        """Forget them all (the temporary database is removed)."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self._set = None
