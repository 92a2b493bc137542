"""Which delivery attempts are under way, kept where a crash leaves it.

A message is marked when its SMTP transaction with a next hop begins and
unmarked when the transaction ends. After the process dies, recovery counts
a crash only for the messages marked then: one that was waiting for a
connection, or for its turn, did nothing that could have brought the
process down, and must not be set aside for restarts it had no part in.

Marks are lines appended to one file with a plain write, not fsynced: what
a process crash needs is then in the kernel and survives it; a machine
crash may lose marks and so counts no crash, which is right, since the
message was not the cause. A write that fails (a full disk) loses its mark
the same way. The file is compacted to the open marks when it grows.
"""

from __future__ import annotations

import contextlib
import os

from mailgw.outage import Outage

COMPACT_AT = 1 << 20  # bytes of marks before the file is rewritten with the open ones


class AttemptLog:
    def __init__(self, path: str, outage: Outage):
        """`outage`: the spool's disk, told when a mark cannot be written."""
        self.path, self.outage = path, outage
        self._fd: int | None = None
        self._open: set[str] = set()
        self._size = 0

    def running(self) -> set[str]:
        """The messages marked and not unmarked: read at recovery, before `reset`."""
        marked: set[str] = set()
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            for line in f:
                queue_id = line[1:].strip().decode("ascii", "replace")
                if line.startswith(b"+"):
                    marked.add(queue_id)
                elif line.startswith(b"-"):
                    marked.discard(queue_id)
        return marked

    def reset(self) -> None:
        """Start afresh (after recovery has read the marks)."""
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._open.clear()
        self._size = 0

    def begin(self, queue_id: str) -> None:
        self._open.add(queue_id)
        self._write(f"+{queue_id}\n")

    def end(self, queue_id: str) -> None:
        self._open.discard(queue_id)
        self._write(f"-{queue_id}\n")
        if self._size > COMPACT_AT:
            self._compact()

    def _write(self, line: str) -> None:
        if self._fd is None:
            return
        try:
            self._size += os.write(self._fd, line.encode())
        except OSError as e:
            self.outage.failed(e, "crashes during delivery are not counted meanwhile")
        else:
            self.outage.ok()

    def _compact(self) -> None:
        tmp = f"{self.path}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write("".join(f"+{i}\n" for i in self._open).encode())
            os.rename(tmp, self.path)
        except OSError as e:
            self.outage.failed(e, "crashes during delivery are not counted meanwhile")
            self._size = 0  # not again before another COMPACT_AT of marks
            return
        marks = self._open.copy()
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._open, self._size = marks, os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
