"""The trace's calendar and daily rhythm.

Local time is Asia/Almaty: UTC+5 in all of Kazakhstan since March 2024. The
trace starts on Monday 10 March 2025, itself a day off (8 March fell on a
Saturday), and a 21-day trace runs through Nauryz (21-23 March, with the
weekend's two days moved to Monday 24 and Tuesday 25: five days off) to the
last week of the quarter. Days are working days, weekends or holidays; the
first working day after three or more days off brings a backlog of its own.
"""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta, timezone

LOCAL = timezone(timedelta(hours=5), "Asia/Almaty")
START = datetime(2025, 3, 10, tzinfo=LOCAL)
T0 = START.timestamp()
HOUR = 3600.0
DAY = 86400.0

HOLIDAYS = {
    date(2025, 3, 10): "International Women's Day (moved from Saturday 8 March)",
    date(2025, 3, 21): "Nauryz",
    date(2025, 3, 22): "Nauryz",
    date(2025, 3, 23): "Nauryz",
    date(2025, 3, 24): "Nauryz (moved from Saturday)",
    date(2025, 3, 25): "Nauryz (moved from Sunday)",
    date(2025, 5, 1): "Unity Day",
    date(2025, 5, 7): "Defender of the Fatherland Day",
    date(2025, 5, 9): "Victory Day",
}

# Share of a day's mail per local hour. Offices: 09-18 with the lunch hour
# (13-14) dipping, light evenings, nearly silent nights.
OFFICE = (0.12, 0.08, 0.06, 0.05, 0.06, 0.1, 0.25, 0.9, 3.2, 8.0, 11.0, 11.5,
          9.8, 5.2, 9.5, 11.0, 10.2, 8.0, 4.2, 2.2, 1.4, 0.9, 0.6, 0.3)
# a weekend or holiday: the few who work, late morning to evening
OFF_DAY = (0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 1.5, 3.0, 5.0, 6.5,
           7.0, 6.5, 6.5, 6.5, 6.0, 5.0, 4.0, 3.5, 3.0, 2.5, 1.5, 0.8)
# duty services (police, emergencies, hospitals): busier by day, never idle
ROUND_THE_CLOCK = (3.0, 2.5, 2.2, 2.0, 2.0, 2.2, 3.0, 4.0, 6.0, 7.5, 8.0, 8.0,
                   7.5, 6.5, 7.5, 8.0, 7.5, 7.0, 6.0, 5.5, 5.0, 4.5, 4.0, 3.5)
# notices to citizens from e-services: follow the citizens' day
PORTAL = (0.8, 0.5, 0.3, 0.3, 0.3, 0.5, 1.2, 3.0, 5.5, 7.5, 8.0, 8.0,
          7.5, 7.0, 7.5, 7.5, 7.0, 6.5, 5.5, 5.0, 4.5, 3.5, 2.5, 1.5)


def normalised(weights: tuple[float, ...] | list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


class Calendar:
    def __init__(self, days: int):
        self.days = days
        self.dates = [START.date() + timedelta(days=d) for d in range(days)]
        self.kinds = [self._kind(day) for day in self.dates]

    @staticmethod
    def _kind(day: date) -> str:
        if day in HOLIDAYS:
            return "holiday"
        return "weekend" if day.weekday() >= 5 else "work"

    def working(self, d: int) -> bool:
        return self.kinds[d] == "work"

    def start(self, d: int) -> float:
        """The UTC timestamp of local midnight starting day `d`."""
        return T0 + d * DAY

    def day_of(self, ts: float) -> int:
        return int((ts - T0) // DAY)

    def days_off_before(self, d: int) -> int:
        n = 0
        while d - n - 1 >= 0 and not self.working(d - n - 1):
            n += 1
        return n

    def catch_up(self, d: int) -> float:
        """Mail held back over a long break goes out the day after it."""
        return 1.3 if self.working(d) and self.days_off_before(d) >= 3 else 1.0

    def working_days(self, first: int = 0, last: int | None = None) -> list[int]:
        last = self.days - 1 if last is None else last
        return [d for d in range(first, last + 1) if self.working(d)]

    def holidays(self) -> list[tuple[str, str]]:
        return [(day.isoformat(), HOLIDAYS[day]) for day in self.dates if day in HOLIDAYS]


def local(ts: float, seconds: bool = False) -> str:
    """`ts` as local time, e.g. "Tue 03-18 14:05"."""
    t = datetime.fromtimestamp(ts, LOCAL)
    return t.strftime("%a %m-%d %H:%M:%S" if seconds else "%a %m-%d %H:%M")


def at(d: int, hour: float) -> float:
    """The timestamp of local `hour` (fractional) on day `d`."""
    return T0 + d * DAY + hour * HOUR


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
