"""Durable-file primitives of the spool: a new file written whole and
fsynced, a directory fsync shared by concurrent callers (group commit), and
the lock a running gateway holds on its spool.

Files the gateway and the operators' CLI both use (the spool's, the event
log, the SQLite files) are made with SHARED: the owner's and the group's to
read and write, as far as the umask allows (the service's 0007 allows it;
README, "Deploying"), never the world's.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

SHARED = 0o660


class SpoolLock:
    """Held by the gateway that owns a spool, for as long as it runs (a
    second gateway on the same spool refuses to start), or by the CLI while
    it changes the spool of a gateway that is not running."""

    def __init__(self, root: Path):
        self.path = root / "lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, SHARED)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


class DirSync:
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


def write_new(path: str, *parts: bytes) -> None:
    """A new file holding `parts`, fsynced and closed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SHARED)
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
