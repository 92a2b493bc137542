"""The spool: accepted mail on disk, the only copy the gateway keeps.

Guarantees:
- `put` returns only after the message is written, fsynced, renamed into
  place and its directory fsynced. Only then may ingress answer 250.
- A message is one file, `<state>/ID.msg`: a line of JSON metadata, then the
  raw message bytes. Its directory is its state: `queue/` (waiting, new or
  deferred), `active/` (claimed by delivery), `hold/` (kept back), `corrupt/`
  (set aside). State changes are renames; a metadata update writes a new
  file and renames it over. One file, not data and metadata apart, because
  each file created, fsynced and unlinked is the biggest cost of a message.
- `recover` at start puts every message claimed by a process that died back
  into the queue, counting the crash; a message that crashed delivery
  `max_crashes` times is set aside instead of being retried forever.
  Leftovers of unfinished puts (never answered 250) are removed.

All methods block; callers on the event loop run them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

State = Literal["queue", "active", "hold", "corrupt"]
STATES: tuple[State, ...] = ("queue", "active", "hold", "corrupt")
RecipientState = Literal["pending", "delivered", "bounced"]
Origin = Literal["system", "dsn", "notice"]
SUFFIX = ".msg"
UNREADABLE = (ValueError, TypeError, KeyError)  # what broken metadata raises


@dataclass
class Recipient:
    address: str
    state: RecipientState = "pending"
    code: int | None = None
    response: str | None = None
    remote: str | None = None


@dataclass
class Meta:
    id: str
    system: str | None
    sender: str
    recipients: list[Recipient]
    size: int
    received_at: float
    origin: Origin = "system"
    attempts: int = 0
    next_try: float = 0.0
    crashes: int = 0
    client: dict[str, str | None] = field(default_factory=dict)

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]

    def to_json(self) -> bytes:
        """One line: orjson never writes a raw newline (nor does it escape
        non-ASCII), and it is several times faster than json here."""
        obj = dict(vars(self))  # asdict() deep-copies; one level is all there is
        obj["recipients"] = [vars(r) for r in self.recipients]
        return orjson.dumps(obj)

    @classmethod
    def from_json(cls, raw: bytes) -> Meta:
        obj = orjson.loads(raw)
        obj["recipients"] = [Recipient(**r) for r in obj["recipients"]]
        return cls(**obj)


class SpoolError(Exception):
    pass


def _store_failed(queue_id: str, cause: Exception) -> SpoolError:
    error = SpoolError(f"cannot store {queue_id}: {cause}")
    error.__cause__ = cause
    return error


def new_queue_id() -> str:
    """Time-ordered, unique: microseconds since the epoch plus 24 random bits
    (unique, not secret: nothing is protected by a queue id being unguessable)."""
    return f"{time.time_ns() // 1000:013X}{random.getrandbits(24):06X}"


class _DirSync:
    """fsync of one directory, shared by concurrent callers (group commit).

    A caller needs a sync that *started* after its rename; if one is under
    way it waits for the next, which then covers every caller that queued
    behind it. Under load one fsync serves many messages."""

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self.cond = threading.Condition()
        self.started = 0  # syncs begun
        self.done = 0  # syncs finished (the number of the last one)
        self.running = False
        self.error: OSError | None = None

    def sync(self) -> None:
        with self.cond:
            need = self.started + 1
            while self.done < need:
                if self.running:
                    self.cond.wait()
                    continue
                self.running = True
                self.started += 1
                ticket = self.started
                self.cond.release()
                try:
                    os.fsync(self.fd)
                    error = None
                except OSError as e:
                    error = e
                finally:
                    self.cond.acquire()
                self.running = False
                self.done = ticket
                self.error = error
                self.cond.notify_all()
            if self.error is not None:
                raise self.error


def _write_new(path: str, *parts: bytes) -> None:
    """A new file holding `parts`, fsynced and closed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        todo = [memoryview(p) for p in parts if p]
        while todo:
            written = os.writev(fd, todo)
            while todo and written >= len(todo[0]):
                written -= len(todo.pop(0))
            if written:
                todo[0] = todo[0][written:]
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, root: Path, max_crashes: int = 5):
        self.root = root
        self.max_crashes = max_crashes
        self.tmp = root / "tmp"
        for d in (self.tmp, *(root / s for s in STATES)):
            d.mkdir(parents=True, exist_ok=True)
        self._dirsync = {s: _DirSync(root / s) for s in STATES}
        # paths as strings: a message's path is built several times on its
        # way, and pathlib costs more than the system calls it feeds
        self._prefix = {s: f"{root / s}{os.sep}" for s in ("tmp", *STATES)}

    def _path(self, state: State | Literal["tmp"], queue_id: str) -> str:
        return f"{self._prefix[state]}{queue_id}{SUFFIX}"

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _place(self, meta: Meta, data: bytes, dst: State) -> None:
        """Write the message file into tmp/, fsync it and rename it into
        `dst`, replacing an older version there. Durable only once `dst` is
        fsynced. On failure the temporary file is removed."""
        tmp = self._path("tmp", meta.id)
        try:
            _write_new(tmp, meta.to_json(), b"\n", data)
            os.rename(tmp, self._path(dst, meta.id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _store(self, meta: Meta, data: bytes, dst: State) -> None:
        self._place(meta, data, dst)
        self._dirsync[dst].sync()

    def put_many(self, messages: list[tuple[Meta, bytes]]) -> list[SpoolError | None]:
        """Store new messages durably in `queue/`; one fsync of the directory
        serves them all. For each message None, or the SpoolError that kept
        it out (what was written of it is removed). A message that cannot be
        written, for whatever reason, fails alone: the others of its batch
        came from other sessions."""
        errors: list[SpoolError | None] = []
        for meta, data in messages:
            try:
                self._place(meta, data, "queue")
                errors.append(None)
            except Exception as e:  # noqa: BLE001 - that session answers 451
                errors.append(_store_failed(meta.id, e))
        if any(e is None for e in errors):
            try:
                self._dirsync["queue"].sync()
            except OSError as e:
                for i, (meta, _) in enumerate(messages):
                    if errors[i] is None:
                        with contextlib.suppress(OSError):
                            os.unlink(self._path("queue", meta.id))
                        errors[i] = _store_failed(meta.id, e)
        return errors

    def put(self, meta: Meta, data: bytes) -> None:
        """Store one new message durably in `queue/`, or raise SpoolError."""
        (error,) = self.put_many([(meta, data)])
        if error is not None:
            raise error

    def read(self, state: State, queue_id: str) -> Meta:
        """The metadata only; the message bytes stay on disk."""
        with open(self._path(state, queue_id), "rb") as f:
            return Meta.from_json(f.readline())

    def load(self, state: State, queue_id: str) -> tuple[Meta, bytes]:
        with open(self._path(state, queue_id), "rb") as f:
            head, _, data = f.read().partition(b"\n")
        return Meta.from_json(head), data

    def move(self, queue_id: str, src: State, dst: State) -> None:
        """Change state by rename. Not fsynced: losing a move in a crash only
        means the message is found in its previous state, which recovery handles."""
        os.rename(self._path(src, queue_id), self._path(dst, queue_id))

    def claim(self, queue_id: str) -> tuple[Meta, bytes]:
        """Take a waiting message for delivery. The rename is the lock: of two
        claimants only one finds the file."""
        self.move(queue_id, "queue", "active")
        return self.load("active", queue_id)

    def rewrite(self, meta: Meta, src: State, dst: State, data: bytes | None = None) -> None:
        """Write updated metadata durably into `dst` and drop it from `src`;
        `data`, the message bytes if the caller holds them, spares reading
        them back."""
        if data is None:
            _, data = self.load(src, meta.id)
        self._store(meta, data, dst)
        # durable in dst before it leaves src: a crash in between leaves it in
        # both, which recovery resolves, never in neither
        if src != dst:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(src, meta.id))

    def remove(self, queue_id: str, state: State) -> None:
        """Forget a finished message."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(state, queue_id))

    def remove_many(self, queue_ids: list[str], state: State) -> list[OSError | None]:
        """Forget finished messages; for each, None or why it could not be."""
        errors: list[OSError | None] = []
        for queue_id in queue_ids:
            try:
                self.remove(queue_id, state)
                errors.append(None)
            except OSError as e:
                errors.append(e)
        return errors

    def _metas(self, state: State) -> list[Meta]:
        """Metadata of every message in a state; one that moves on while this
        runs (delivered, held, released) is simply not in the answer."""
        out = []
        for queue_id in self.ids(state):
            with contextlib.suppress(FileNotFoundError):
                out.append(self.read(state, queue_id))
        return out

    def systems_in(self, state: State) -> set[str]:
        return {m.system for m in self._metas(state) if m.system is not None}

    def ids_of(self, state: State, system: str) -> list[str]:
        """Messages of one system in a state (reads each one's metadata)."""
        return [m.id for m in self._metas(state) if m.system == system]

    def ids(self, state: State) -> list[str]:
        return sorted(p.stem for p in (self.root / state).glob(f"*{SUFFIX}"))

    def recover(self) -> list[Meta]:
        """Run once at start, before anything else touches the spool. Returns
        the metadata of every message now waiting in `queue/`."""
        for leftover in self.tmp.iterdir():
            leftover.unlink()
        self._upgrade()
        elsewhere = {i for s in ("queue", "hold", "corrupt") for i in self.ids(s)}
        for queue_id in self.ids("active"):
            if queue_id in elsewhere:
                # a crash inside `rewrite`: its new copy was durable first and stands
                self.remove(queue_id, "active")
                continue
            try:
                meta = self.read("active", queue_id)
            except UNREADABLE:
                self.move(queue_id, "active", "corrupt")  # set aside, never dropped
                continue
            meta.crashes += 1
            self.rewrite(meta, "active", "corrupt" if meta.crashes >= self.max_crashes else "queue")
        waiting = []
        for queue_id in self.ids("queue"):
            try:
                waiting.append(self.read("queue", queue_id))
            except UNREADABLE:
                self.move(queue_id, "queue", "corrupt")
        return waiting

    def _upgrade(self) -> None:
        """Spools of earlier versions kept each message in two files:
        `messages/ID.eml` and `<state>/ID.json`. Each becomes one file in its
        state, durably, before the old pair goes; a data file without
        metadata was never answered 250 (or was delivered) and goes."""
        old = self.root / "messages"
        if not old.is_dir():
            return
        for state in STATES:
            for meta_path in sorted((self.root / state).glob("*.json")):
                data_path = old / f"{meta_path.stem}.eml"
                if data_path.exists():
                    tmp = self._path("tmp", meta_path.stem)
                    _write_new(tmp, meta_path.read_bytes().rstrip(b"\n"), b"\n",
                               data_path.read_bytes())
                    os.rename(tmp, self._path(state, meta_path.stem))
                    self._dirsync[state].sync()
                    data_path.unlink()
                meta_path.unlink()
        shutil.rmtree(old)
