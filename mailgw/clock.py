"""Time, injected. Windows, retries and rules ask a Clock, never the time
module, so tests and `mailgw replay` can drive time themselves."""

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


def utc_time(ts: float | None, seconds: bool = False) -> str:
    """A moment as people read it in replies, notices, pages and the CLI:
    "2026-11-25 10:42 UTC" (with seconds if asked); "" for none."""
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC",
                         time.gmtime(ts))
