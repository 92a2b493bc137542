"""A SQLite file that the gateway and the operators' CLI both write
(state.db, a spool's journal.db): made with the spool's SHARED mode before
SQLite opens it (SQLite would make it 0644 less the umask, not the group's to
write; its -wal and -shm files take the mode of the database), in WAL mode
(readers never wait for the writer) and durable at each commit
(synchronous=FULL)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from mailgw.relay.files import SHARED


def open_shared(path: Path, schema: str) -> sqlite3.Connection:
    """The database at `path` with `schema` applied; one connection, for
    callers that take turns (check_same_thread is off)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, SHARED))  # an empty file is an empty database
    db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db
