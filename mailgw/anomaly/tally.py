"""What one event does to one system's windows, and what comes back.

The engine turns an event into a Tally; a windows backend (in-process, or
Redis shared by several gateways) applies it and answers with Counts; the
engine judges its rules on those. The backends never see rules, the engine
never sees storage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Window = tuple[str, float]  # (metric, seconds)

# metrics counted per key (recipient, domain) rather than summed, and how
# they read: distinct keys, or the largest count of one key
KEYED: dict[str, str] = {"recipient_domains": "distinct", "top_recipient": "top"}


@dataclass(frozen=True, slots=True)
class Tally:
    system: str
    ts: float
    kind: str  # the event
    sums: tuple[tuple[str, float, float], ...]  # (metric, window, amount) to add
    keys: tuple[tuple[str, float, tuple[str, ...]], ...]  # (keyed metric, window, keys) to count
    hours: tuple[tuple[str, float], ...]  # (metric, amount) to add to this clock hour's count
    reads: tuple[Window, ...]  # windows the rules judging this event read


@dataclass(frozen=True, slots=True)
class Counts:
    values: dict[Window, float]  # each window of `reads`, after the tally
    hours: dict[str, float]  # each metric of `hours`: its count so far this clock hour


class SharedWindows(Protocol):
    """A windows backend several gateways count in together (Redis)."""

    def submit(self, tally: Tally, fallback: Counts,
               then: Callable[[Tally, Counts], None]) -> None:
        """Count `tally`, then call `then` with the counts: with `fallback`
        (the in-process ones) if the backend cannot be had."""

    def reset(self, system: str, once: str) -> None:
        """Clear a lifted system's windows, once per lift `once`."""

    async def top_keys(self, system: str, window: Window, n: int) -> list[str] | None:
        """The `n` keys counted most in `window`, or None if it cannot say."""
