"""Events: what happened, told once by the stage where it happened, taken in
by whoever keeps a record of it.

Stages (ingress, delivery, the hold, suspensions, the DNSBL watch) `emit`
to the bus; its subscribers are the event log, the metrics, the egress
usage, the judge (which counts a system's traffic) and the audit of held
mail. An event is a record, never a command: no stage learns from its emit
what any subscriber does with it.

The event log: one JSON object per line, the format of DESIGN.md.
It is an audit and replay record, not the mail's durability: the spool is.
Lines are buffered and flushed by the owner every `gateway.flush_interval`
(0.5 s by default), so a kill -9 loses at most that much of the log; a write
per line would cost the busy event loop a system call per event. With an
interval of 0 every line is written at once. A write the disk refuses (full)
loses those lines, told once per outage, and never stops the mail: a line
cut short by it stands on its own line, apart from those written after.
`mailgw replay` reads the same file. `reopen` (SIGUSR1) starts a new file
at the same path, for logrotate.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from mailgw.clock import Clock
from mailgw.outage import Outage
from mailgw.relay.files import SHARED

log = logging.getLogger("mailgw.events")


Event = dict[str, Any]  # {"ts", "system", "event", ...fields}: a line of the event log
Subscriber = Callable[[Event], None]


class EventSink(Protocol):
    def emit(self, event: str, system: str | None, **fields: Any) -> None: ...


class EventBus:
    """Each event, stamped with the clock, to every subscriber in the order
    they subscribed (the event log first)."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: str, system: str | None, **fields: Any) -> None:
        record = {"ts": self.clock.now(), "system": system, "event": event, **fields}
        for subscriber in self._subscribers:
            subscriber(record)


class EventLog:
    def __init__(self, path: Path, line_buffered: bool = False):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = self._open()
        self._line_buffered = line_buffered
        self._lines: list[str] = []
        self._torn = False  # the last write stopped inside a line
        self.outage = Outage(log, f"the event log {path}")

    def write(self, event: Event) -> None:
        """A subscriber of the bus: the event as a line."""
        record = {**event, "ts": round(event["ts"], 3)}
        self._lines.append(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n")
        if self._line_buffered:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        data = memoryview((("\n" if self._torn else "") + "".join(self._lines)).encode())
        lost = len(self._lines)
        self._lines.clear()
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:
            self._torn = True
            self.outage.failed(e, f"{lost} event lines lost, and more until it takes "
                               "writes again")
            return
        self._torn = False
        self.outage.ok()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, SHARED)

    def reopen(self) -> None:
        """Go on in a new file at `path` (SIGUSR1, after logrotate renamed
        the old one): what was written before goes to the old file, every
        event from now on to the new one. If the new file cannot be opened,
        the old one is kept and the error raised."""
        fd = self._open()
        self.flush()
        old, self._fd = self._fd, fd
        self._torn = False  # a line the old file cut short stays there
        os.close(old)

    def close(self) -> None:
        self.flush()
        os.close(self._fd)
