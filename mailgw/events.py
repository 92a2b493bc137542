"""The event log: one JSON object per line, the format of DESIGN.md.

It is an audit and replay record, not the mail's durability: the spool is.
Lines are buffered and flushed by the owner every `gateway.flush_interval`
(0.5 s by default), so a kill -9 loses at most that much of the log; a write
per line would cost the busy event loop a system call per event. With an
interval of 0 every line is written at once.
`mailgw replay` reads the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from mailgw.clock import Clock


class EventSink(Protocol):
    def emit(self, event: str, system: str | None, **fields: Any) -> None: ...


class Tee:
    """Every event to each of several sinks (the log, the metrics)."""

    def __init__(self, *sinks: EventSink):
        self.sinks = sinks

    def emit(self, event: str, system: str | None, **fields: Any) -> None:
        for sink in self.sinks:
            sink.emit(event, system, **fields)


class EventLog:
    def __init__(self, path: Path, clock: Clock, line_buffered: bool = False):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", buffering=1 if line_buffered else -1)  # noqa: SIM115
        self._clock = clock

    def emit(self, event: str, system: str | None, **fields: Any) -> None:
        record = {"ts": round(self._clock.now(), 3), "system": system, "event": event}
        record.update(fields)
        self._file.write(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
