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

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mailgw.anomaly.metrics import FEW, METRICS, Metric, kept
from mailgw.anomaly.tally import HISTORY_STEP, HISTORY_STEPS, Counts, Tally, Window

BUCKETS = 12
KEY_CAP = 4096


class Counter:
    """Sum of a number over the last `window` seconds."""

    __slots__ = ("width", "slots", "epoch", "running")

    def __init__(self, window: float, buckets: int = BUCKETS):
        # a bucket's epoch is int(ts / width) (ts > 0): floor(ts / width), as
        # the Redis backend's script takes it, where ts // width would
        # differ at a boundary and cost an fmod at every event
        self.width = window / buckets
        self.slots = [0.0] * buckets
        self.epoch = -(1 << 62)  # epoch of the newest bucket
        self.running = 0.0

    def _advance(self, epoch: int) -> None:
        n = len(self.slots)
        for e in range(max(self.epoch + 1, epoch - n + 1), epoch + 1):
            i = e % n
            self.running -= self.slots[i]
            self.slots[i] = 0.0
        self.epoch = epoch

    def add(self, ts: float, amount: float = 1.0) -> float:
        """Add `amount` at `ts`; the total after it. An event older than
        the window (a clock stepped back) is not counted."""
        epoch = int(ts / self.width)
        if epoch > self.epoch:
            self._advance(epoch)
        elif epoch <= self.epoch - len(self.slots):
            return self.running
        self.slots[epoch % len(self.slots)] += amount
        self.running += amount
        return self.running

    def total(self, ts: float) -> float:
        epoch = int(ts / self.width)
        if epoch > self.epoch:
            self._advance(epoch)
        return self.running


class KeyCounter:
    """Counts per key (recipient, domain) over the last `window` seconds:
    how many distinct keys, the largest count of one key, and (with `few`)
    the counts of the FEW largest summed."""

    __slots__ = ("width", "slots", "epoch", "totals", "top_count", "leaders", "few_count",
                 "floor")

    def __init__(self, window: float, buckets: int = BUCKETS, few: bool = False):
        self.width = window / buckets
        # a bucket's counts per key; None while it has none (most, for a sender)
        self.slots: list[dict[str, int] | None] = [None] * buckets
        self.epoch = -(1 << 62)
        self.totals: dict[str, int] = {}
        self.top_count = 0
        # with `few`: the FEW keys counted most and their counts, the sum of
        # those, and the least of them once there are FEW (a key counted
        # past it takes its place: counts only grow between expiries)
        self.leaders: dict[str, int] | None = {} if few else None
        self.few_count = 0
        self.floor = 0

    def _advance(self, ts: float) -> int:
        epoch = int(ts / self.width)
        if epoch > self.epoch:
            n = len(self.slots)
            expired = False
            for e in range(max(self.epoch + 1, epoch - n + 1), epoch + 1):
                slot = self.slots[e % n]
                if slot is None:
                    continue
                for key, count in slot.items():
                    left = self.totals[key] - count
                    if left:
                        self.totals[key] = left
                    else:
                        del self.totals[key]
                    expired = True
                self.slots[e % n] = None
            if expired:
                totals = self.totals
                if self.leaders is None:
                    self.top_count = max(totals.values(), default=0)
                else:  # chosen again, in one pass; the top count is a leader's
                    leaders = self.leaders = {}
                    self.few_count = self.floor = 0
                    for key, count in totals.items():
                        if count > self.floor:
                            self._rise(leaders, key, count)
                    self.top_count = max(leaders.values(), default=0)
            self.epoch = epoch
        return epoch

    def add(self, ts: float, keys: tuple[str, ...]) -> tuple[int, int, int]:
        """Count `keys` at `ts` (not if older than the window); the distinct
        keys, the top count and the FEW top counts' sum after it."""
        epoch = self._advance(ts)
        if not keys or epoch <= self.epoch - len(self.slots):
            return len(self.totals), self.top_count, self.few_count
        slot = self.slots[epoch % len(self.slots)]
        if slot is None:
            slot = self.slots[epoch % len(self.slots)] = {}
        totals, leaders = self.totals, self.leaders
        for key in keys:
            if key in slot:
                slot[key] += 1
            elif len(slot) < KEY_CAP:
                slot[key] = 1
            else:
                continue
            count = totals.get(key, 0) + 1
            totals[key] = count
            if count > self.top_count:
                self.top_count = count
            if leaders is not None and (count > self.floor or key in leaders):
                self._rise(leaders, key, count)
        return len(totals), self.top_count, self.few_count

    def _rise(self, leaders: dict[str, int], key: str, count: int) -> None:
        """`key` counted up to `count`, a leader already or one now."""
        if key in leaders:
            leaders[key] = count
            self.few_count += 1
            if count - 1 == self.floor and len(leaders) == FEW:
                self.floor = min(leaders.values())
            return
        if len(leaders) == FEW:
            low = min(leaders, key=leaders.__getitem__)
            self.few_count -= leaders.pop(low)
        leaders[key] = count
        self.few_count += count
        if len(leaders) == FEW:
            self.floor = min(leaders.values())

    def distinct(self, ts: float) -> int:
        self._advance(ts)
        return len(self.totals)

    def top_keys(self, ts: float, n: int) -> list[str]:
        self._advance(ts)
        return sorted(self.totals, key=self.totals.__getitem__, reverse=True)[:n]

    def top(self, ts: float) -> int:
        self._advance(ts)
        return self.top_count

    def few(self, ts: float) -> int:
        self._advance(ts)
        return self.few_count


class Baseline:
    """A system's usual count for each hour of the week, learned as it goes:
    when an hour ends its count (0 for a silent hour) is blended into that
    hour-of-week's figure, a weekly moving average that follows slow change
    (a new department) but not one odd week. It is told the hour's count so
    far by the windows backend, so with Redis every gateway learns the
    system's whole traffic, not its own share."""

    __slots__ = ("slots", "first_hour", "hour", "count", "ranked")
    WEEK = 168
    ALPHA = 0.3

    def __init__(self) -> None:
        self.slots: list[float | None] = [None] * self.WEEK  # None: never seen
        self.first_hour: int | None = None
        self.hour = 0
        self.count = 0.0
        # the learned hours, busiest first (`busiest`), until an hour is blended
        self.ranked: list[float] | None = None

    def _blend(self, hour: int, value: float) -> None:
        i = hour % self.WEEK
        old = self.slots[i]
        if old is None:
            self.slots[i] = value
        else:
            # the mean of its first weeks, then the moving average: a week
            # weighs no more than its share while there are few (one odd
            # first week, a holiday, is then half the usual after two, not 70%)
            weeks = (hour - (self.first_hour or hour)) // self.WEEK + 1
            self.slots[i] = old + max(self.ALPHA, 1.0 / weeks) * (value - old)
        self.ranked = None

    def _roll(self, hour: int) -> None:
        if self.first_hour is None:
            self.first_hour = self.hour = hour
            return
        if hour <= self.hour:
            return
        # the hour that ended, then the silent ones since (a week of them at most)
        self._blend(self.hour, self.count)
        for silent in range(max(self.hour + 1, hour - self.WEEK), hour):
            self._blend(silent, 0.0)
        self.hour, self.count = hour, 0.0

    def seen(self, ts: float, hour_count: float) -> None:
        """The count of the clock hour `ts` falls in, so far."""
        hour = int(ts // 3600)
        self._roll(hour)
        if hour == self.hour:  # not a late event from an hour already blended
            self.count = max(self.count, hour_count)

    def expected(self, ts: float, min_history: float) -> float | None:
        """The usual count for the hour of the week `ts` falls in, or None
        while less than `min_history` seconds have been seen."""
        hour = int(ts // 3600)
        self._roll(hour)
        if self.first_hour is None or (hour - self.first_hour) * 3600 < min_history:
            return None
        return self.slots[hour % self.WEEK] or 0.0

    def busiest(self, ts: float, rank: int) -> float | None:
        """The usual count of the `rank`-th busiest hour of the week
        learned so far (of the quietest, while fewer are learned); None
        until an hour is learned."""
        self._roll(int(ts // 3600))
        learned = self.ranked
        if learned is None:  # sorted once an hour, not at every event
            learned = self.ranked = sorted((x for x in self.slots if x is not None),
                                           reverse=True)
        return learned[min(rank, len(learned)) - 1] if learned else None

    def snapshot(self) -> dict[str, Any]:
        return {"slots": self.slots, "first_hour": self.first_hour, "hour": self.hour,
                "count": self.count}

    @classmethod
    def restore(cls, data: dict[str, Any]) -> Baseline:
        b = cls()
        b.slots = [None if x is None else float(x) for x in data["slots"]]
        b.first_hour = data["first_hour"]
        b.hour, b.count = int(data["hour"]), float(data["count"])
        return b


# what a system has sent to (Seen): remembered for periods of SEEN_PERIOD
# seconds, SEEN_BITS bits each, at most SEEN_CAP keys learned a period
# (module constants: a compiled class keeps no class attributes)
SEEN_PERIOD = 30 * 86400
SEEN_BITS = 1 << 16
SEEN_CAP = 6000
# a key's three probes, worked out once for every system that asks (the
# same correspondents' domains come again and again; SHA-1 was a third of
# what asking cost): at most PROBES_CAP keys, about 2.1 MiB with the keys
# (domains) themselves, forgotten at once when full
PROBES_CAP = 1 << 14
_probes: dict[str, int] = {}


def _probe(key: str) -> int:
    """The first three 16-bit words of `key`'s SHA-1, as one int."""
    p = _probes.get(key)
    if p is None:
        if len(_probes) >= PROBES_CAP:
            _probes.clear()
        p = _probes[key] = int.from_bytes(hashlib.sha1(key.encode()).digest()[:6], "big")
    return p


class Seen:
    """The keys (recipient domains) a system has sent to, remembered for one
    to two SEEN_PERIODs in 8 KiB per period: a Bloom filter of 65,536
    bits, three probes a key, the positions the first three 16-bit words of
    the key's SHA-1 (as the Redis backend's script takes them). A period
    learns at most SEEN_CAP keys (about 1% false "seen" there): past it a flood
    of new keys stays new rather than filling the filter. A key seen in the
    last period is carried into this one when it comes again, so a system's
    correspondents are never forgotten while it writes to them.
    """

    __slots__ = ("gen", "cur", "prev", "count", "asked", "answer")

    def __init__(self) -> None:
        self.gen = -1
        self.cur = bytearray(SEEN_BITS // 8)
        self.prev = bytearray(SEEN_BITS // 8)
        self.count = 0
        # the last keys asked about, and the answer: asked again about the
        # very same object (one event's keys, made for it by a metric's
        # function, asked by a system's engine after its sender's), the
        # answer is the same, not "seen" as they now are
        self.asked: object = None
        self.answer = 0

    def novel(self, ts: float, keys: tuple[str, ...]) -> int:
        """How many of `keys` were never seen; they are remembered now."""
        if keys is self.asked:
            return self.answer
        gen = int(ts // SEEN_PERIOD)
        if gen != self.gen:
            # a new period: the last one is kept, anything older forgotten
            self.prev = self.cur if gen == self.gen + 1 else bytearray(SEEN_BITS // 8)
            self.cur, self.count, self.gen = bytearray(SEEN_BITS // 8), 0, gen
        cur, prev = self.cur, self.prev
        new = 0
        for key in keys:
            p = _probe(key)
            p1, p2, p3 = p >> 32, (p >> 16) & 0xFFFF, p & 0xFFFF
            b1, b2, b3 = 1 << (p1 & 7), 1 << (p2 & 7), 1 << (p3 & 7)
            i1, i2, i3 = p1 >> 3, p2 >> 3, p3 >> 3
            if cur[i1] & b1 and cur[i2] & b2 and cur[i3] & b3:
                continue
            if not (prev[i1] & b1 and prev[i2] & b2 and prev[i3] & b3):
                new += 1
            if self.count < SEEN_CAP:
                self.count += 1
                cur[i1] |= b1
                cur[i2] |= b2
                cur[i3] |= b3
        self.asked, self.answer = keys, new
        return new


class SystemWindows:
    """One system's (or sender's) windows, indexed as the engine's list of
    windows (two windows of one count share its counter), each made when
    first counted: a sender that never bounces has no counters of failures.
    A sender's cost little: no bound methods or dicts per window beyond its
    counters."""

    __slots__ = ("sums", "keyed", "hours", "history")

    def __init__(self) -> None:
        self.sums: dict[int, Counter] = {}
        self.keyed: dict[int, KeyCounter] = {}
        self.hours: dict[str, tuple[int, float]] = {}  # metric -> (clock hour, count)
        self.history: dict[int, float] = {}  # history step -> messages


# KeyCounter.add's figures, by the reading each is
_FIGURES = ("distinct", "top", "few")


class LocalWindows:
    """The in-process backend: every system's windows in this process. The
    embedded default, `mailgw replay`, and the fallback while Redis is away.

    With `cap`, the windows of at most `cap` keys of one memory (a system's
    senders) are kept, and none of a key idle for longer than `idle`
    seconds (its windows are empty by then): a key counted again goes to
    the back of the line, and the one idle longest leaves when it has been
    idle too long or a new one comes beyond the cap (`on_evict` is told).
    So a system's senders cost memory while they send, and a system that
    invents senders costs bounded memory."""

    def __init__(self, windows: Sequence[Window], history: bool = True,
                 metrics: Mapping[str, Metric] = METRICS, cap: int = 0, idle: float = 0.0,
                 on_evict: Callable[[str], None] | None = None,
                 memory: dict[str, dict[str, Seen]] | None = None) -> None:
        self.windows = windows
        self.metrics = metrics
        self.keep_history = history
        self.systems: dict[str, SystemWindows] = {}
        # per memory (a system): what it has sent to, per novel metric; one
        # for a system's engine and its senders' (`memory`: the other's)
        self.memory: dict[str, dict[str, Seen]] = {} if memory is None else memory
        self.cap = cap
        self.idle = idle
        self.on_evict = on_evict
        # memory -> its keys, idle longest first, with when each was last counted
        self._lines: dict[str, OrderedDict[str, float]] = {}
        self._kept = kept(windows, metrics)
        # each window's seconds and whether its count keeps leaders
        self._seconds = [seconds for _, seconds in windows]
        self._few = [k.few for k in self._kept]
        # keyed window -> which of KeyCounter.add's figures it reads
        self._pick = {i: _FIGURES.index(k.how) for i, k in enumerate(self._kept)
                      if k.how != "sum"}
        # keyed window -> every window of its count, with the figure each reads
        self._shared = {i: tuple((j, self._pick[j]) for j, o in enumerate(self._kept)
                                 if o.how != "sum" and o.counter == k.counter)
                        for i, k in enumerate(self._kept) if k.how != "sum"}

    def count(self, t: Tally) -> Counts:
        w = self.systems.get(t.system)
        if w is None:
            w = self.systems[t.system] = SystemWindows()
        if self.cap:
            self._queue(t.system, t.memory or t.system, t.ts)
        ts, sums, keyed = t.ts, w.sums, w.keyed
        # a window the event adds to is one its rules read (engine.py); -1:
        # not counted yet (no count is below 0)
        values = [-1.0] * len(self.windows)
        for window, amount in t.sums:
            values[window] = self._sum(sums, window).add(ts, amount)
        for window, keys in t.keys:
            shared = self._shared[window]
            kc = keyed.get(window)
            if kc is None:
                kc = KeyCounter(self._seconds[window], few=self._few[window])
                for i, _ in shared:
                    keyed[i] = kc
            figures = kc.add(ts, keys)
            for i, pick in shared:
                values[i] = figures[pick]
        for metric, keys, windows in t.novel:
            memory = self.memory.get(t.memory or t.system)
            if memory is None:
                memory = self.memory[t.memory or t.system] = {}
            seen = memory.get(metric)
            if seen is None:
                seen = memory[metric] = Seen()
            new = 1.0 if seen.novel(ts, keys) else 0.0
            for window in windows:
                values[window] = self._sum(sums, window).add(ts, new)
        hours: dict[str, float] = {}
        if t.hours:
            hour = int(ts // 3600)
            for metric, amount in t.hours:
                was, count = w.hours.get(metric, (hour, 0.0))
                count = (count if was == hour else 0.0) + amount
                w.hours[metric] = (hour, count)
                hours[metric] = count
        if t.traffic and self.keep_history:
            step = int(ts // HISTORY_STEP)
            history = w.history
            if step not in history:
                for old in [s for s in history if s <= step - HISTORY_STEPS]:
                    del history[old]
            history[step] = history.get(step, 0.0) + t.traffic
        for r in t.reads:
            if values[r] < 0:
                values[r] = self._read(w, r, ts)
        return Counts(values, t.reads, hours)

    def _sum(self, sums: dict[int, Counter], window: int) -> Counter:
        """A summed window's counter, made when first counted."""
        counter = sums.get(window)
        if counter is None:
            counter = sums[window] = Counter(self._seconds[window])
        return counter

    def _read(self, w: SystemWindows, window: int, ts: float) -> float:
        counter = w.sums.get(window)
        if counter is not None:
            return counter.total(ts)
        kc = w.keyed.get(window)
        if kc is None:  # never counted
            return 0.0
        pick = self._pick[window]
        return float(kc.distinct(ts) if pick == 0 else kc.top(ts) if pick == 1 else kc.few(ts))

    def _queue(self, key: str, memory: str, ts: float) -> None:
        line = self._lines.get(memory)
        if line is None:
            line = self._lines[memory] = OrderedDict()
        known = key in line
        line[key] = ts
        if known:
            line.move_to_end(key)
        while line:
            oldest = next(iter(line))  # a view of its items cost as much again
            if len(line) <= self.cap and (not self.idle or line[oldest] >= ts - self.idle):
                break
            del line[oldest]
            del self.systems[oldest]
            if self.on_evict is not None:
                self.on_evict(oldest)

    def first_time(self, memory: str, key: str, ts: float) -> bool:
        """Whether `memory` (a system) never saw `key` (a sender) in the last
        one to two SEEN_PERIODs; it has now."""
        seen = self.memory.get(memory)
        if seen is None:
            seen = self.memory[memory] = {}
        senders = seen.get("")  # the novel metrics' names are never empty
        if senders is None:
            senders = seen[""] = Seen()
        return senders.novel(ts, (key,)) > 0

    def last_counted(self, memory: str, key: str) -> float | None:
        """When `key` (a sender of `memory`) was last counted (with `cap`)."""
        line = self._lines.get(memory)
        return line.get(key) if line is not None else None

    def keys_of(self, memory: str) -> list[str]:
        """The keys counted under `memory` (a system's senders; with `cap`)."""
        return list(self._lines.get(memory, ()))

    def read(self, key: str, window: int, ts: float) -> float:
        """One window of `key` now (0 if it has none)."""
        w = self.systems.get(key)
        return self._read(w, window, ts) if w is not None else 0.0

    def top_keys(self, system: str, ts: float, window: int, n: int) -> list[str]:
        w = self.systems.get(system)
        kc = w.keyed.get(window) if w else None
        return kc.top_keys(ts, n) if kc else []

    def history(self, system: str, ts: float) -> dict[int, float]:
        w = self.systems.get(system)
        first = int(ts // HISTORY_STEP) - HISTORY_STEPS
        return {s: n for s, n in w.history.items() if s > first} if w else {}

    def reset(self, system: str) -> None:
        """Clear a system's windows; its history and what it has sent to stay
        (what it sent is still what it sent)."""
        w = self.systems.pop(system, None)
        if w is not None:
            self.systems[system] = fresh = SystemWindows()
            fresh.history = w.history
