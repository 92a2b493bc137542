"""The spool: accepted mail on disk, the only copy the gateway keeps.

Guarantees:
- `put` returns only after the message is written, fsynced, renamed into
  place and its directory fsynced. Only then may ingress answer 250.
- A message is one file, `<state>/ID.msg` (relay/queue_file.py). Its
  directory is its state: `queue/` (waiting, new or deferred), `active/`
  (claimed by delivery), `hold/` (kept back), `corrupt/` (set aside). The
  verbs below are the state machine; each change of state is one rename,
  and a change of metadata is a small append (fsynced), never a rewrite of
  the message: a full disk fails it and leaves the message where it was.
- `recover` at start puts every message claimed by a process that died back
  into the queue. It counts a crash only for those whose delivery attempt
  was under way (relay/attempts.py); one that crashed `max_crashes` times
  is set aside instead of being retried forever, and reported. Leftovers
  of unfinished puts (never answered 250) are removed. Recovery needs no
  free space: renames, and appends that may fail without harm.

All methods block; callers on the event loop run them in a thread (the
attempt marks are the exception: one small write each).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mailgw.outage import Outage
from mailgw.relay.attempts import AttemptLog
from mailgw.relay.files import DirSync, SpoolLock, write_new
from mailgw.relay.queue_file import UNREADABLE, Meta, Recipient, decode, encode, read_meta, update

__all__ = ["STATES", "STATE_NAMES", "Meta", "Recipient", "Recovered", "SetAside", "Spool",
           "SpoolError", "SpoolLock", "State", "new_queue_id"]

log = logging.getLogger("mailgw.spool")

State = Literal["queue", "active", "hold", "corrupt"]
STATES: tuple[State, ...] = ("queue", "active", "hold", "corrupt")
# the states as operators read them, in the CLI's tables and the metrics' labels
STATE_NAMES: dict[State, str] = {"queue": "queued", "hold": "held", "active": "delivering",
                                 "corrupt": "set aside"}
SUFFIX = ".msg"
# head and update records beyond which an update rewrites the file whole
# (when it can): a message deferred for days stays about its own size
COMPACT_AT = 64 * 1024


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


@dataclass
class SetAside:
    """A message recovery set aside in `corrupt/`, and why."""
    id: str
    why: str
    meta: Meta | None  # None: its metadata could not be read


@dataclass
class Recovered:
    waiting: list[Meta] = field(default_factory=list)  # in `queue/`, to be scheduled
    set_aside: list[SetAside] = field(default_factory=list)


class Spool:
    def __init__(self, root: Path, max_crashes: int = 5, disk: Outage | None = None):
        """`disk`: told when the spool's disk fails a write and when it works again."""
        self.root = root
        self.max_crashes = max_crashes
        self.disk = disk or Outage(log, "the spool's disk", quiet=10.0)
        self.tmp = root / "tmp"
        for d in (self.tmp, *(root / s for s in STATES)):
            d.mkdir(parents=True, exist_ok=True)
        self._dirsync = {s: DirSync(root / s) for s in STATES}
        # paths as strings: a message's path is built several times on its
        # way, and pathlib costs more than the system calls it feeds
        self._prefix = {s: f"{root / s}{os.sep}" for s in ("tmp", *STATES)}
        self.attempts = AttemptLog(str(root / "attempts"), self.disk)

    def _path(self, state: State | Literal["tmp"], queue_id: str) -> str:
        return f"{self._prefix[state]}{queue_id}{SUFFIX}"

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    # --- new messages --------------------------------------------------------

    def _place(self, meta: Meta, data: bytes, dst: State) -> None:
        """Write the message file into tmp/, fsync it and rename it into
        `dst`, replacing an older version there. Durable only once `dst` is
        fsynced. On failure the temporary file is removed."""
        tmp = self._path("tmp", meta.id)
        try:
            write_new(tmp, *encode(meta, data))
            os.rename(tmp, self._path(dst, meta.id))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

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

    # --- reading -------------------------------------------------------------

    def read(self, state: State, queue_id: str) -> Meta:
        """The metadata only; the message bytes stay on disk."""
        with open(self._path(state, queue_id), "rb") as f:
            return read_meta(f)[0]

    def load(self, state: State, queue_id: str) -> tuple[Meta, bytes]:
        with open(self._path(state, queue_id), "rb") as f:
            return decode(f.read())

    def ids(self, state: State) -> list[str]:
        return sorted(p.stem for p in (self.root / state).glob(f"*{SUFFIX}"))

    def census(self) -> dict[State, tuple[int, float | None]]:
        """Per state: how many messages, and when the one there longest
        arrived (None: none there). Ids go in time order, so that is the
        first one whose metadata reads."""
        out: dict[State, tuple[int, float | None]] = {}
        for state in STATES:
            ids = self.ids(state)
            first = None
            for queue_id in ids:
                try:
                    first = self.read(state, queue_id).received_at
                    break
                except (FileNotFoundError, *UNREADABLE):
                    continue  # moved on meanwhile, or set aside for its metadata
            out[state] = (len(ids), first)
        return out

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

    def count_by_system(self, state: State) -> Counter[str]:
        """How many of each system's own messages are in a state (reads
        each one's metadata once)."""
        return Counter(m.system for m in self._metas(state)
                       if m.system is not None and m.origin == "system")

    def ids_of(self, state: State, system: str) -> list[str]:
        """A system's own mail in a state, not the gateway's notices and
        bounces about it (reads each one's metadata)."""
        return [m.id for m in self.metas_of(state, system)]

    def metas_of(self, state: State, system: str) -> list[Meta]:
        """The metadata of a system's own mail in a state."""
        return [m for m in self._metas(state) if m.system == system and m.origin == "system"]

    # --- the state machine ---------------------------------------------------
    # Renames are not fsynced: losing one in a crash only means the message
    # is found in its previous state, which recovery handles.

    def _move(self, queue_id: str, src: State, dst: State) -> None:
        os.rename(self._path(src, queue_id), self._path(dst, queue_id))

    def claim(self, queue_id: str) -> tuple[Meta, bytes]:
        """Take a waiting message for delivery. The rename is the lock: of two
        claimants only one finds the file (FileNotFoundError for the other)."""
        self._move(queue_id, "queue", "active")
        return self.load("active", queue_id)

    def claim_many(self, queue_ids: list[str]) -> list[tuple[Meta, bytes] | Exception]:
        """`claim` each; for each, what it gave or the exception it raised."""
        out: list[tuple[Meta, bytes] | Exception] = []
        for queue_id in queue_ids:
            try:
                out.append(self.claim(queue_id))
            except Exception as e:  # noqa: BLE001 - that attempt handles it
                out.append(e)
        return out

    def claim_known(self, queue_id: str) -> None:
        """`claim`, for a message whose metadata and bytes the caller holds
        (just accepted): the rename alone."""
        self._move(queue_id, "queue", "active")

    def take(self, queue_id: str, state: State) -> tuple[Meta, bytes]:
        """An operator's claim of a message waiting, held or set aside, by the
        same rename lock as delivery's."""
        self._move(queue_id, state, "active")
        return self.load("active", queue_id)

    def _note(self, meta: Meta, data: bytes | None) -> None:
        """Record `meta` as the claimed message's metadata, durably: an update
        record appended and fdatasynced (relay/queue_file.py). When records
        have piled up and the caller holds the bytes, the file is rewritten
        whole instead, if the disk has room for it; a file of the earlier
        layout always is."""
        path = self._path("active", meta.id)
        with open(path, "r+b") as f:
            old, appendable = read_meta(f)
            record = update(old, meta)
            end = f.seek(0, os.SEEK_END)
            piled_up = data is not None and end + len(record) - len(data) > COMPACT_AT
            if piled_up or not appendable:
                try:
                    self._place(meta, self.load("active", meta.id)[1] if data is None else data,
                                "active")
                    self._dirsync["active"].sync()
                    return
                except OSError:
                    if not appendable:
                        raise
                    # an append needs less room
            f.write(record)
            f.flush()
            os.fdatasync(f.fileno())

    def defer(self, meta: Meta, data: bytes | None = None, to: State = "queue") -> None:
        """A claimed message back to waiting, with its metadata as given (a
        deferral, a release): in the queue, or in hold when its system was
        suspended meanwhile. `data`, the bytes if the caller holds them. If
        the update cannot be written (OSError) the message stays claimed,
        unchanged."""
        self._note(meta, data)
        self._move(meta.id, "active", to)

    def unclaim(self, queue_id: str, to: State = "queue") -> None:
        """Back unchanged: to the queue (an attempt cut short by a stop, or by
        the gateway's death), or to where `take` took it from."""
        self._move(queue_id, "active", to)

    def set_aside(self, queue_id: str, meta: Meta | None = None,
                  data: bytes | None = None) -> None:
        """A claimed message out of delivery into `corrupt/`: it crashed too
        often (its metadata as given), or its metadata cannot be read."""
        if meta is not None:
            self._note(meta, data)
        self._move(queue_id, "active", "corrupt")

    def hold(self, queue_id: str, src: State = "active") -> None:
        """A suspended system's message, claimed or waiting in the queue, is
        kept in `hold/` (from the queue by the same rename lock as a claim)."""
        self._move(queue_id, src, "hold")

    def release(self, queue_id: str) -> None:
        """A held message back to the queue (its system's suspension lifted)."""
        self._move(queue_id, "hold", "queue")

    def purge(self, queue_id: str, state: State) -> None:
        """Forget a message without delivering it (an operator's purge)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(state, queue_id))

    def ack_many(self, queue_ids: list[str]) -> list[OSError | None]:
        """Forget claimed messages whose every recipient is delivered or
        bounced; for each, None or why it could not be."""
        errors: list[OSError | None] = []
        for queue_id in queue_ids:
            try:
                self.purge(queue_id, "active")
                errors.append(None)
            except OSError as e:
                errors.append(e)
        return errors

    # --- attempts under way --------------------------------------------------

    def attempt_begins(self, queue_id: str) -> None:
        """Its SMTP transaction begins: a crash from now on is counted for it."""
        self.attempts.begin(queue_id)

    def attempt_ends(self, queue_id: str) -> None:
        self.attempts.end(queue_id)

    # --- start -------------------------------------------------------------

    def recover(self) -> Recovered:
        """Run once at start, before anything else touches the spool: every
        claimed message back to the queue (a crash counted where its
        attempt was under way), what was set aside, and every message now
        waiting in `queue/`."""
        for leftover in self.tmp.iterdir():
            leftover.unlink()
        self._upgrade()
        running = self.attempts.running()
        out = Recovered()
        # a crash inside a rewrite of an earlier version left a copy in two states
        elsewhere = {i for s in ("queue", "hold", "corrupt") for i in self.ids(s)}
        for queue_id in self.ids("active"):
            if queue_id in elsewhere:
                self.purge(queue_id, "active")
                continue
            try:
                meta = self.read("active", queue_id)
            except UNREADABLE:
                self.set_aside(queue_id)  # never dropped
                out.set_aside.append(SetAside(queue_id, "unreadable metadata", None))
                continue
            if queue_id not in running:
                self.unclaim(queue_id)
                continue
            meta.crashes += 1
            try:
                if meta.crashes < self.max_crashes:
                    self.defer(meta)
                    continue
                self.set_aside(queue_id, meta)
            except OSError as e:  # no room to count it: back it goes, uncounted
                self.disk.failed(e, "a crash is left uncounted")
                self.unclaim(queue_id)
                continue
            out.set_aside.append(SetAside(
                queue_id, f"the gateway died during {meta.crashes} of its delivery attempts",
                meta))
        self.attempts.reset()
        for queue_id in self.ids("queue"):
            try:
                out.waiting.append(self.read("queue", queue_id))
            except UNREADABLE:
                self._move(queue_id, "queue", "corrupt")
                out.set_aside.append(SetAside(queue_id, "unreadable metadata", None))
        return out

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
                    write_new(tmp, meta_path.read_bytes().rstrip(b"\n"), b"\n",
                               data_path.read_bytes())
                    os.rename(tmp, self._path(state, meta_path.stem))
                    self._dirsync[state].sync()
                    data_path.unlink()
                meta_path.unlink()
        shutil.rmtree(old)
