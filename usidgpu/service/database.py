"""The one SQLite connection the catalog and the job table each keep, shared by threads."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """Statements run as one write transaction (``BEGIN IMMEDIATE``: the write lock is taken at
    the start, so two writers never deadlock upgrading), rolled back on any error. ``lock`` keeps
    this process's threads off the connection meanwhile (a connection is not for two threads at
    once)."""
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
