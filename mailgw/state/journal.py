"""A gateway's own journal beside its spool (`<spool_dir>/journal.db`, one
SQLite file per gateway, since each gateway owns its spool), for a shared
state store (Redis) that may be away, or come back empty:

- the suspensions this gateway knows to be in force, so that one restarted
  while the store is away still refuses their mail, and writes back to the
  store those it lost;
- an outbox of audit entries the store could not take when they were made
  (the gateway's `held` entries, the CLI's `queue release/purge`), written
  to the store later, in the order they came, each exactly once: an entry
  leaves the outbox only after the store took it, and its key lets the store
  refuse it a second time (a crash between the two).

Local and durable like the spool (synchronous=FULL); the gateway and the CLI
of the same spool both use it (WAL mode, one writer at a time).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from mailgw.state.records import AuditEntry, Suspension
from mailgw.state.sqlite import open_shared
from mailgw.state.store import Store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS known (
    system TEXT PRIMARY KEY,  -- the subject (mailgw/senders.py)
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    entry TEXT NOT NULL
);
"""



class Journal:
    def __init__(self, spool_dir: Path):
        self.path = spool_dir / "journal.db"
        self._lock = threading.Lock()  # one connection, used by several I/O threads
        self._db = open_shared(self.path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def known(self) -> dict[str, Suspension]:
        """The suspensions in force when the gateway last wrote them down
        (those without an id were not in the store yet)."""
        with self._lock:
            rows = self._db.execute("SELECT system, record FROM known").fetchall()
        return {system: Suspension(**json.loads(text)) for system, text in rows}

    def keep(self, known: Mapping[str, Suspension]) -> None:
        """Write down every suspension in force, in place of the last list."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("DELETE FROM known")
                self._db.executemany("INSERT INTO known VALUES (?, ?)",
                                     [(s, json.dumps(r.as_dict(), ensure_ascii=False))
                                      for s, r in known.items()])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def queue(self, entry: AuditEntry) -> None:
        """Into the outbox, behind the entries already there."""
        with self._lock:
            self._db.execute("INSERT INTO outbox (key, entry) VALUES (?, ?)",
                             (uuid.uuid4().hex, json.dumps(asdict(entry), ensure_ascii=False)))

    def deliver(self, store: Store) -> int:
        """Blocking: the outbox into `store`, oldest first; each entry is let
        go once the store took it. Stops at the first the store refuses (it
        raises) and leaves that one and the rest for the next time. How many
        went."""
        with self._lock:
            waiting = self._db.execute("SELECT seq, key, entry FROM outbox ORDER BY seq").fetchall()
        for seq, key, text in waiting:
            # the store is not called under the lock: it may take its timeout
            store.record(AuditEntry(**json.loads(text)), key)
            with self._lock:
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        return len(waiting)
