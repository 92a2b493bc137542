"""What one event does to one system's windows, and what comes back.

The engine turns an event into a Tally; a windows backend (in-process, or
Redis shared by several gateways) applies it and answers with Counts; the
engine judges its rules on those. The backends never see rules, the engine
never sees storage. Windows are named by their index in the engine's list
of windows (`Engine.windows`), which each backend is given at the start:
an event then costs no hashing of (metric, seconds) pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Window = tuple[str, float]  # (metric, seconds)

# the status page's chart: a system's messages per 10 minutes over 24 hours
HISTORY_STEP = 600
HISTORY_STEPS = 144


class Tally:
    """Made for every event by each engine: a plain class, which the
    compiled engine builds natively (a NamedTuple's __new__ runs as Python)."""

    __slots__ = ("system", "ts", "kind", "sums", "keys", "hours", "reads", "traffic", "novel",
                 "memory")

    def __init__(self, system: str, ts: float, kind: str,
                 sums: tuple[tuple[int, float], ...],
                 keys: tuple[tuple[int, tuple[str, ...]], ...],
                 hours: tuple[tuple[str, float], ...], reads: tuple[int, ...],
                 traffic: float = 0.0,
                 novel: tuple[tuple[str, tuple[str, ...], tuple[int, ...]], ...] = (),
                 memory: str = "") -> None:
        self.system = system
        self.ts = ts
        self.kind = kind  # the event
        self.sums = sums  # (window, amount) to add
        self.keys = keys  # (keyed window, keys) to count
        self.hours = hours  # (metric, amount) to add to this clock hour's count
        self.reads = reads  # windows the rules judging this event read
        self.traffic = traffic  # messages to add to the system's 24-hour history
        # (metric, keys, windows): the keys' count never seen before, to add to the windows
        self.novel = novel
        # whose memory of the keys seen a novel metric asks: the system's,
        # also for one of its senders ("": `system` itself)
        self.memory = memory


class Counts:
    """A tally's windows after it: a list by window id (an event then
    costs no dict of boxed ids), of which those in `read` hold a count."""

    __slots__ = ("values", "read", "hours")

    def __init__(self, values: list[float], read: tuple[int, ...],
                 hours: dict[str, float]) -> None:
        self.values = values  # by window id: each window of `read` after the tally
        self.read = read  # the tally's `reads`
        self.hours = hours  # each metric of `hours`: its count so far this clock hour

    def of_reads(self) -> dict[int, float]:
        """The windows read, by id."""
        return {i: self.values[i] for i in self.read}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counts) and (self.of_reads(), self.hours) == (
            other.of_reads(), other.hours)

    def __repr__(self) -> str:
        return f"Counts({self.of_reads()!r}, {self.hours!r})"


class SharedWindows(Protocol):
    """A windows backend several gateways count in together (Redis)."""

    def submit(self, tally: Tally, fallback: Counts,
               then: Callable[[Tally, Counts], None]) -> None:
        """Count `tally`, then call `then` with the counts: with `fallback`
        (the in-process ones) if the backend cannot be had."""

    def reset(self, system: str, once: str) -> None:
        """Clear a lifted system's (or sender's) windows, once per lift `once`."""

    async def settled(self, system: str) -> None:
        """Return once every tally of `system` (and of its senders) submitted
        so far is judged."""

    async def top_keys(self, system: str, window: int, n: int) -> list[str] | None:
        """The `n` keys counted most in `window`, or None if it cannot say."""

    async def counts(self, tally: Tally) -> Counts | None:
        """Count `tally` now, outside the batches; None if it cannot be had."""

    async def history(self, system: str, ts: float) -> dict[int, float] | None:
        """The system's messages per HISTORY_STEP over the HISTORY_STEPS up
        to `ts`, by step number (ts // HISTORY_STEP); None if it cannot say."""
