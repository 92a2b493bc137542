"""The event log: one JSON object per line, the format of DESIGN.md.

It is an audit and replay record, not the mail's durability: the spool is.
Lines are flushed as written so a crash loses at most the line being written,
and `mailgw replay` reads the same file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from mailgw.clock import Clock


class EventSink(Protocol):
    def emit(self, event: str, system: str | None, **fields: Any) -> None: ...


class EventLog:
    def __init__(self, path: Path, clock: Clock):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._clock = clock

    def emit(self, event: str, system: str | None, **fields: Any) -> None:
        record = {"ts": round(self._clock.now(), 3), "system": system, "event": event}
        record.update(fields)
        self._file.write(json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n")

    def close(self) -> None:
        self._file.close()
