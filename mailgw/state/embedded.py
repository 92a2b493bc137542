"""The embedded state store: one SQLite file, shared by the running gateway
and the operator CLI (WAL mode: readers never wait for the writer).

Guarantees:
- at most one active record per subject (a system, or one sender of it),
  enforced by a partial unique index, so two writers (gateway and CLI) can
  never both suspend it;
- every change is in the same transaction as its audit entry; the audit
  table is only ever appended to;
- commits are durable (synchronous=FULL) before a call returns;
- a suspension a gateway knows but the file lost (replaced by an older or
  an empty one) is written back by `confirm`, under its id when that is free.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mailgw.state.records import RESTORED, AuditEntry, Suspension
from mailgw.state.sqlite import open_shared

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suspensions (
    id INTEGER PRIMARY KEY,
    system TEXT NOT NULL,
    since REAL NOT NULL,
    by TEXT NOT NULL,
    rule TEXT, observed REAL, threshold REAL, window REAL, reason TEXT,
    evidence TEXT NOT NULL DEFAULT '{}',
    lifted_at REAL, lifted_by TEXT, lift_reason TEXT,
    purge INTEGER NOT NULL DEFAULT 0,
    sender TEXT,
    grace_until REAL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    system TEXT,
    action TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS audit_keys (
    key TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS notices (
    suspension_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (suspension_id, kind)
);
CREATE TABLE IF NOT EXISTS dnsbl (
    address TEXT NOT NULL,
    zone TEXT NOT NULL,
    listed INTEGER NOT NULL,
    reason TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (address, zone)
);
CREATE TABLE IF NOT EXISTS baselines (
    system TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_u BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_is_append_only_d BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

# after the schema, on a file of any age: a file from before sender
# restrictions gains the column, and its index of one active record per
# system (which would refuse a sender's restriction beside the system's
# suspension) gives way to one per subject
_SUBJECTS = """
DROP INDEX IF EXISTS one_active_per_system;
CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_subject
    ON suspensions(system, COALESCE(sender, '')) WHERE lifted_at IS NULL;
"""

_COLUMNS = ("id", "system", "since", "by", "rule", "observed", "threshold", "window", "reason",
            "evidence", "lifted_at", "lifted_by", "lift_reason", "purge", "sender",
            "grace_until")


_SELECTED = ", ".join(_COLUMNS)


def _suspension(row: sqlite3.Row) -> Suspension:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["evidence"] = json.loads(values["evidence"])
    values["purge"] = bool(values["purge"])
    return Suspension(**values)


def _same(a: Suspension, b: Suspension) -> bool:
    """One suspension, not another that took its id (times as stored: to the ms)."""
    return a.subject == b.subject and abs(a.since - b.since) < 0.001


F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """One caller at a time: the connection is shared by the event loop and
    I/O threads, and a transaction must not take in another thread's work."""
    @functools.wraps(method)
    def wrapper(self: EmbeddedStore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class EmbeddedStore:
    def __init__(self, path: Path):
        self._lock = threading.Lock()
        self._db = open_shared(path, _SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(suspensions)")}
        for column, kind in (("sender", "TEXT"), ("grace_until", "REAL")):
            if column not in columns:  # a file from a release before it
                self._db.execute(f"ALTER TABLE suspensions ADD COLUMN {column} {kind}")
        self._db.executescript(_SUBJECTS)

    @_locked
    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Committed if the block ends normally, rolled back otherwise."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _audit(self, entry: AuditEntry) -> None:
        self._db.execute(
            "INSERT INTO audit (ts, system, action, by, reason, details) VALUES (?,?,?,?,?,?)",
            (entry.ts, entry.system, entry.action, entry.by, entry.reason,
             json.dumps(entry.details, ensure_ascii=False)))

    @_locked
    def record(self, entry: AuditEntry, key: str | None = None) -> None:
        """Append `entry`; one with a `key` already taken is not appended again."""
        if key is None:
            self._audit(entry)  # one statement: autocommitted
            return
        with self._transaction():
            if self._db.execute("INSERT OR IGNORE INTO audit_keys VALUES (?)",
                                (key,)).rowcount == 1:
                self._audit(entry)

    @_locked
    def dnsbl_transition(self, address: str, zone: str, listed: bool, reason: str,
                         at: float) -> bool:
        """Record `address`'s state on `zone`; True if it changed (the caller
        who changed it tells the operators)."""
        with self._transaction():
            row = self._db.execute("SELECT listed FROM dnsbl WHERE address = ? AND zone = ?",
                                   (address, zone)).fetchone()
            changed = (bool(row[0]) if row else False) != listed
            if row is None or changed:
                self._db.execute("INSERT OR REPLACE INTO dnsbl VALUES (?,?,?,?,?)",
                                 (address, zone, int(listed), reason, at))
            if changed:
                self._audit(AuditEntry(at, None, "dnsbl_listed" if listed else
                                       "dnsbl_delisted", "dnsbl", reason,
                                       {"address": address, "zone": zone}))
        return changed

    @_locked
    def dnsbl_listings(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT address, zone, listed, reason, since FROM dnsbl "
                                "ORDER BY address, zone").fetchall()
        return [{"address": a, "zone": z, "listed": bool(li), "reason": r, "since": t}
                for a, z, li, r, t in rows]

    @_locked
    def suspend(self, s: Suspension) -> Suspension | None:
        """Record a suspension (or a sender's restriction); None when its
        subject has one already."""
        try:
            with self._transaction():
                row = self._insert(s, None)
                self._audit(AuditEntry(s.since, s.system, s.actions[0], s.by, s.reason or s.rule,
                                       s.finding()))
        except sqlite3.IntegrityError:
            return None
        return row

    def _insert(self, s: Suspension, suspension_id: int | None) -> Suspension:
        """`s` as an active suspension, under `suspension_id` (None: the next)."""
        return _suspension(self._db.execute(
            "INSERT INTO suspensions (id, system, since, by, rule, observed, threshold, window,"
            " reason, evidence, sender) VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING " + _SELECTED,
            (suspension_id, s.system, s.since, s.by, s.rule, s.observed, s.threshold, s.window,
             s.reason, json.dumps(s.evidence, ensure_ascii=False), s.sender)).fetchone())

    @_locked
    def confirm(self, s: Suspension, at: float) -> tuple[Suspension, bool]:
        """See `Store.confirm`."""
        assert s.id is not None
        with self._transaction():
            row = self._db.execute(f"SELECT {_SELECTED} FROM suspensions WHERE id=?",
                                   (s.id,)).fetchone()
            if row is not None and _same(_suspension(row), s):
                return _suspension(row), False
            current = self._db.execute(f"SELECT {_SELECTED} FROM suspensions WHERE system=? AND"
                                       " sender IS ? AND lifted_at IS NULL",
                                       (s.system, s.sender)).fetchone()
            if current is not None:
                return _suspension(current), False
            # under its own id unless another record took it meanwhile;
            # an id above every other one moves the next id past it
            back = self._insert(s, s.id if row is None else None)
            self._db.execute("INSERT OR IGNORE INTO notices VALUES (?, 'suspended')", (back.id,))
            self._audit(AuditEntry(at, s.system, "restored", "gateway", RESTORED,
                                   {"suspension": back.id}))
        return back, True

    @_locked
    def lift(self, system: str, by: str, reason: str, at: float,
             purge: bool = False, sender: str | None = None,
             grace_until: float | None = None) -> Suspension | None:
        """See `Store.lift`."""
        with self._transaction():
            cur = self._db.execute(
                "UPDATE suspensions SET lifted_at=?, lifted_by=?, lift_reason=?, purge=?,"
                " grace_until=? WHERE system=? AND sender IS ? AND lifted_at IS NULL"
                " RETURNING " + _SELECTED,
                (at, by, reason, int(purge), grace_until, system, sender))
            row = cur.fetchone()
            if row is None:
                return None
            lifted = _suspension(row)
            self._audit(AuditEntry(at, system, lifted.actions[1], by, reason, lifted.ending()))
        return lifted

    @_locked
    def spared(self, now: float) -> dict[str, Suspension]:
        """See `Store.spared`."""
        rows = self._db.execute(
            f"SELECT {_SELECTED} FROM suspensions s WHERE grace_until > ? AND NOT EXISTS"
            " (SELECT 1 FROM suspensions t WHERE t.system = s.system AND t.sender IS s.sender"
            " AND t.id > s.id)", (now,)).fetchall()
        return {(r := _suspension(row)).subject: r for row in rows}

    @_locked
    def claim_notice(self, suspension_id: int, kind: str) -> bool:
        """True for exactly one caller per suspension and kind: the one that
        sends that notice, however many gateways share the store."""
        cur = self._db.execute("INSERT OR IGNORE INTO notices VALUES (?, ?)", (suspension_id, kind))
        return cur.rowcount == 1

    @_locked
    def unclaim_notice(self, suspension_id: int, kind: str) -> None:
        """Give a claimed notice back (sending it failed), for another try."""
        self._db.execute("DELETE FROM notices WHERE suspension_id=? AND kind=?",
                         (suspension_id, kind))

    @_locked
    def pending_notices(self) -> list[tuple[str, Suspension]]:
        """(kind, record) for every notice not yet claimed: suspensions, and
        lifts, including those made while no gateway was running."""
        rows = self._db.execute(
            f"SELECT 'suspended', {_SELECTED} FROM suspensions s WHERE NOT EXISTS (SELECT 1"
            " FROM notices n WHERE n.suspension_id = s.id AND n.kind = 'suspended')"
            f" UNION ALL SELECT 'lifted', {_SELECTED} FROM suspensions s"
            " WHERE s.lifted_at IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM notices n WHERE n.suspension_id = s.id"
            " AND n.kind = 'lifted') ORDER BY 2").fetchall()
        return [(row[0], _suspension(row[1:])) for row in rows]

    @_locked
    def latest(self, system: str, sender: str | None = None) -> Suspension | None:
        row = self._db.execute(f"SELECT {_SELECTED} FROM suspensions WHERE system=? AND"
                               " sender IS ? ORDER BY id DESC LIMIT 1",
                               (system, sender)).fetchone()
        return _suspension(row) if row is not None else None

    @_locked
    def save_baselines(self, baselines: dict[str, Any]) -> None:
        """The engine's learned hour-of-week baselines, so a restart keeps them."""
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO baselines VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in baselines.items()])

    @_locked
    def load_baselines(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT * FROM baselines")}

    @_locked
    def active(self) -> dict[str, Suspension]:
        """Every record in force, by subject."""
        rows = self._db.execute(f"SELECT {_SELECTED} FROM suspensions"
                                " WHERE lifted_at IS NULL").fetchall()
        return {(r := _suspension(row)).subject: r for row in rows}

    @_locked
    def history(self, system: str | None = None) -> list[AuditEntry]:
        sql = "SELECT id, ts, system, action, by, reason, details FROM audit"
        order = " ORDER BY ts, id"  # time order, whenever an entry was written
        rows = self._db.execute(sql + (" WHERE system=?" + order if system else order),
                                (system,) if system else ()).fetchall()
        return [AuditEntry(id=r[0], ts=r[1], system=r[2], action=r[3], by=r[4], reason=r[5],
                           details=json.loads(r[6])) for r in rows]
