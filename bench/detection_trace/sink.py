"""Events as they are generated, written out in time order.

Generators add events in any order within a day (a deferred recipient's
retry may fall days later); `flush` writes, in (ts, generation order), the
ones before a moment that nothing generated later can precede, and keeps
the rest. Timestamps are rounded to the millisecond, as the gateway writes
them; every event's first keys are "ts" and "system", which lets a later
pass pick a system's lines without parsing them.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import IO, Any

import orjson


class Sink:
    def __init__(self) -> None:
        self.pending: list[tuple[float, int, dict[str, Any]]] = []
        self.seq = 0
        self.queued = 0
        self.counts: Counter[str] = Counter()

    def add(self, event: dict[str, Any]) -> None:
        ts = event["ts"] = round(event["ts"], 3)
        self.pending.append((ts, self.seq, event))
        self.seq += 1

    def queue_id(self) -> str:
        """Twelve hex digits, unique: the counter times an odd constant,
        modulo 2**48, is a permutation."""
        self.queued += 1
        return f"{(self.queued * 0x9E3779B97F4B) & 0xFFFFFFFFFFFF:012X}"

    def flush(self, out: IO[bytes], until: float | None = None) -> int:
        self.pending.sort(key=lambda e: (e[0], e[1]))
        cut = len(self.pending) if until is None else \
            bisect.bisect_left(self.pending, until, key=lambda e: e[0])
        ready, self.pending = self.pending[:cut], self.pending[cut:]
        dumps = orjson.dumps
        out.write(b"".join(dumps(e) + b"\n" for _, _, e in ready))
        self.counts.update(e["event"] for _, _, e in ready)
        return len(ready)
