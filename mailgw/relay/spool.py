"""The spool: accepted mail on disk, the only copy the gateway keeps.

Guarantees:
- `put` returns only after the message bytes and its metadata are written,
  fsynced, renamed into place and their directories fsynced. Only then may
  ingress answer 250.
- A message is raw bytes (`messages/ID.eml`) plus JSON metadata whose
  directory is its state: `queue/` (waiting, new or deferred), `active/`
  (claimed by delivery), `hold/` (kept back), `corrupt/` (set aside).
  State changes are renames.
- `recover` at start puts every message claimed by a process that died back
  into the queue, counting the crash; a message that crashed delivery
  `max_crashes` times is set aside instead of being retried forever.
  Leftovers of unfinished puts (never answered 250) are removed.

All methods block; callers on the event loop run them in a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

State = Literal["queue", "active", "hold", "corrupt"]
STATES: tuple[State, ...] = ("queue", "active", "hold", "corrupt")
RecipientState = Literal["pending", "delivered", "bounced"]
Origin = Literal["system", "dsn", "notice"]


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
        obj = dict(vars(self))  # asdict() deep-copies; one level is all there is
        obj["recipients"] = [vars(r) for r in self.recipients]
        return json.dumps(obj, ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Meta:
        obj = json.loads(raw)
        obj["recipients"] = [Recipient(**r) for r in obj["recipients"]]
        return cls(**obj)


class SpoolError(Exception):
    pass


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


def _create(path: Path, data: bytes) -> int:
    """A new file with `data` in it, not yet fsynced; returns the open fd."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_close(*fds: int) -> None:
    """fsync then close each. Written first and fsynced together, the files
    usually share one journal commit instead of paying one each."""
    try:
        for fd in fds:
            os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _write_new(path: Path, data: bytes) -> None:
    _fsync_close(_create(path, data))


class Spool:
    def __init__(self, root: Path, max_crashes: int = 5):
        self.root = root
        self.max_crashes = max_crashes
        self.tmp = root / "tmp"
        self.messages = root / "messages"
        for d in (self.tmp, self.messages, *(root / s for s in STATES)):
            d.mkdir(parents=True, exist_ok=True)
        self._dirsync = {d: _DirSync(root / d) for d in ("messages", *STATES)}

    def _meta_path(self, state: State, queue_id: str) -> Path:
        return self.root / state / f"{queue_id}.json"

    def data_path(self, queue_id: str) -> Path:
        return self.messages / f"{queue_id}.eml"

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def put(self, meta: Meta, data: bytes) -> None:
        """Store a new message durably in `queue/`. Raises SpoolError on any
        failure, after removing what it wrote."""
        data_path = self.data_path(meta.id)
        tmp_meta = self.tmp / f"{meta.id}.json"
        try:
            data_fd = _create(data_path, data)
            try:
                meta_fd = _create(tmp_meta, meta.to_json())
            except BaseException:
                os.close(data_fd)
                raise
            _fsync_close(data_fd, meta_fd)
            os.rename(tmp_meta, self._meta_path("queue", meta.id))
            self._dirsync["messages"].sync()
            self._dirsync["queue"].sync()
        except OSError as e:
            for p in (tmp_meta, data_path, self._meta_path("queue", meta.id)):
                with contextlib.suppress(OSError):
                    p.unlink()
            raise SpoolError(f"cannot store {meta.id}: {e}") from e

    def read(self, state: State, queue_id: str) -> Meta:
        return Meta.from_json(self._meta_path(state, queue_id).read_bytes())

    def read_data(self, queue_id: str) -> bytes:
        return self.data_path(queue_id).read_bytes()

    def move(self, queue_id: str, src: State, dst: State) -> None:
        """Change state by rename. Not fsynced: losing a move in a crash only
        means the message is found in its previous state, which recovery handles."""
        os.rename(self._meta_path(src, queue_id), self._meta_path(dst, queue_id))

    def claim(self, queue_id: str, known: Meta | None = None) -> Meta:
        """Take a waiting message for delivery; `known` spares re-reading
        metadata the caller already holds (a message just accepted)."""
        self.move(queue_id, "queue", "active")
        return known if known is not None else self.read("active", queue_id)

    def rewrite(self, meta: Meta, src: State, dst: State) -> None:
        """Write updated metadata durably into `dst` and drop it from `src`."""
        tmp = self.tmp / f"{meta.id}.json"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _write_new(tmp, meta.to_json())
        os.rename(tmp, self._meta_path(dst, meta.id))
        # durable in dst before it leaves src: a crash in between leaves it in
        # both, which recovery resolves, never in neither
        self._dirsync[dst].sync()
        if src != dst:
            with contextlib.suppress(FileNotFoundError):
                self._meta_path(src, meta.id).unlink()

    def remove(self, queue_id: str, state: State) -> None:
        """Forget a finished message: metadata first, so a crash in between
        leaves only an orphan data file that recovery removes."""
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(state, queue_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            self.data_path(queue_id).unlink()

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
        return sorted(p.stem for p in (self.root / state).glob("*.json"))

    def recover(self) -> list[Meta]:
        """Run once at start, before anything else touches the spool. Returns
        the metadata of every message now waiting in `queue/`."""
        for leftover in self.tmp.iterdir():
            leftover.unlink()
        for queue_id in self.ids("active"):
            try:
                meta = self.read("active", queue_id)
            except (ValueError, TypeError, KeyError):
                self.move(queue_id, "active", "corrupt")  # set aside, never dropped
                continue
            meta.crashes += 1
            self.rewrite(meta, "active", "corrupt" if meta.crashes >= self.max_crashes else "queue")
        known = {i for s in STATES for i in self.ids(s)}
        for data in self.messages.glob("*.eml"):
            if data.stem not in known:
                data.unlink()
        waiting = []
        for queue_id in self.ids("queue"):
            try:
                waiting.append(self.read("queue", queue_id))
            except (ValueError, TypeError, KeyError):
                self.move(queue_id, "queue", "corrupt")
        return waiting
