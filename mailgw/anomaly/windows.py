"""Sliding windows of one system's traffic, in sub-buckets.

A window of length W is kept as B buckets of W/B seconds; the count "over the
last W" is the running sum of the buckets that still overlap it, so the
window slides in steps of W/B rather than jumping. Memory per counter is B
numbers, whatever the traffic. Distinct values (recipient domains) and
per-key counts (messages to one recipient) are kept per bucket in capped
maps: past the cap a bucket stops learning new keys, so a flood costs
bounded memory and still reads as "at least the cap", far above any sane
threshold. Totals are kept running, so reading a window is O(1) per event
and a bucket costs work only when it slides out.

Time is passed in by the caller (event timestamps), never read here, so the
same code serves live traffic and `mailgw replay`. Time must not go back.
"""

from __future__ import annotations

from collections.abc import Iterable

BUCKETS = 12
KEY_CAP = 4096


class Counter:
    """Sum of a number over the last `window` seconds."""

    __slots__ = ("width", "slots", "epoch", "running")

    def __init__(self, window: float, buckets: int = BUCKETS):
        self.width = window / buckets
        self.slots = [0.0] * buckets
        self.epoch = -(1 << 62)  # epoch of the newest bucket
        self.running = 0.0

    def _advance(self, ts: float) -> int:
        epoch = int(ts // self.width)
        if epoch > self.epoch:
            n = len(self.slots)
            for e in range(max(self.epoch + 1, epoch - n + 1), epoch + 1):
                i = e % n
                self.running -= self.slots[i]
                self.slots[i] = 0.0
            self.epoch = epoch
        return epoch

    def add(self, ts: float, amount: float = 1.0) -> None:
        i = self._advance(ts) % len(self.slots)
        self.slots[i] += amount
        self.running += amount

    def total(self, ts: float) -> float:
        self._advance(ts)
        return self.running


class KeyCounter:
    """Counts per key (recipient, domain) over the last `window` seconds:
    how many distinct keys, and the largest count of one key."""

    __slots__ = ("width", "slots", "epoch", "totals", "top_count")

    def __init__(self, window: float, buckets: int = BUCKETS):
        self.width = window / buckets
        self.slots: list[dict[str, int]] = [{} for _ in range(buckets)]
        self.epoch = -(1 << 62)
        self.totals: dict[str, int] = {}
        self.top_count = 0

    def _advance(self, ts: float) -> int:
        epoch = int(ts // self.width)
        if epoch > self.epoch:
            n = len(self.slots)
            expired = False
            for e in range(max(self.epoch + 1, epoch - n + 1), epoch + 1):
                slot = self.slots[e % n]
                for key, count in slot.items():
                    left = self.totals[key] - count
                    if left:
                        self.totals[key] = left
                    else:
                        del self.totals[key]
                    expired = True
                slot.clear()
            if expired:
                self.top_count = max(self.totals.values(), default=0)
            self.epoch = epoch
        return epoch

    def add(self, ts: float, keys: Iterable[str]) -> None:
        slot = self.slots[self._advance(ts) % len(self.slots)]
        for key in keys:
            if key in slot:
                slot[key] += 1
            elif len(slot) < KEY_CAP:
                slot[key] = 1
            else:
                continue
            count = self.totals.get(key, 0) + 1
            self.totals[key] = count
            if count > self.top_count:
                self.top_count = count

    def distinct(self, ts: float) -> int:
        self._advance(ts)
        return len(self.totals)

    def top_keys(self, ts: float, n: int) -> list[str]:
        self._advance(ts)
        return sorted(self.totals, key=self.totals.__getitem__, reverse=True)[:n]

    def top(self, ts: float) -> int:
        self._advance(ts)
        return self.top_count
