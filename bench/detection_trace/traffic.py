"""A system's ordinary day, its hard cases included.

The day's volume is the system's working-day figure (or its weekend share
on a weekend or holiday) times the day's own noise, a little more on
Mondays, less on Fridays, more after a long break, 2-3x in a reporting
rush. It is spread over the hours by the system's profile and within each
10-minute slot by a Poisson draw whose rate is itself random (mail comes in
clumps). A message goes to 1 recipient mostly, now and then to several:
recipients come from the address book by popularity, or are new
correspondents; most messages to many go to one of the system's fixed
lists, which reach deep into the book, stale members included. Some full
mailboxes bounce for a few hours. Added on top: daily batches, circulars,
rushes' reports to one address, backlogs held and flushed, refusals of a
misconfigured client.
"""

from __future__ import annotations

import bisect
import random
import zlib

from . import clock
from .clock import DAY, HOUR, Calendar, at, poisson
from .delivery import (
    DEFERRED,
    NO_DOMAIN,
    QUOTA,
    USER_UNKNOWN,
    Answer,
    Answerer,
    Destinations,
    deliver,
    delivered,
)
from .scenario import Plan
from .sink import Sink
from .systems import System
from .world import World, citizen, person

WEEKDAY = (1.1, 1.0, 1.0, 1.0, 0.9, 1.0, 1.0)


class Traffic:
    def __init__(self, cal: Calendar, world: World, dest: Destinations, plan: Plan, sink: Sink):
        self.cal, self.world, self.dest, self.plan, self.sink = cal, world, dest, plan, sink
        self.defunct = set(world.defunct)
        self.backlog: dict[str, list[float]] = {}
        self.answers: dict[str, Answerer] = {}
        self.quota: dict[str, dict[str, tuple[float, float, bool]]] = {}
        self.dead: dict[str, dict[str, str]] = {}

    def day(self, s: System, d: int) -> None:
        rng = s.rng
        if s.id not in self.answers:
            assert s.book is not None
            book = s.book.addresses, s.book.dead
            self.dead[s.id] = {a: k for a, k in zip(*book, strict=True) if k}
            self.dead[s.id].update(self.plan.dead)
            self.quota[s.id] = {}
            self.answers[s.id] = self._answerer(s)
        times: list[float] = []
        if s.active(d):
            times = self._times(s, d)
            self._full_mailboxes(s, d)
        rush = self.plan.rush.get(s.id)
        stuck = self.plan.stuck.get(s.id)
        for t in times:
            if stuck and stuck[0] <= t < stuck[1]:
                self.backlog.setdefault(s.id, []).append(t)
            elif rush and d in rush[0] and rng.random() < 0.3 * (rush[1] - 1) / rush[1]:
                # reports are people's work: whoever is on them sends them
                self.message(s, t, [rush[2]], sender=s.sender(d, robot=False))
            else:
                self.message(s, t)
        if stuck and d == self.cal.day_of(stuck[1]):
            held = self.backlog.pop(s.id, [])
            for i in range(len(held)):
                self.message(s, stuck[1] + i / stuck[2] + rng.uniform(0, 0.2))
            for case in self.plan.cases:
                if case.kind == "monday_backlog" and case.system == s.id:
                    case.note = f"{len(held)} messages held since {clock.local(stuck[0])} " \
                                f"flushed in {len(held) / stuck[2] / 60:.0f} min"
        if s.active(d):
            self._batches(s, d)
        for ts, rcpts in self.plan.circulars.get((s.id, d), ()):
            self.message(s, ts, rcpts, sender=s.senders[1], size=350_000)
        for ts, mailbox, rcpts, batch, span in self.plan.mailings.get((s.id, d), ()):
            parts = [rcpts[i:i + batch] for i in range(0, len(rcpts), batch)]
            for i, part in enumerate(parts):
                self.message(s, ts + span * i / len(parts) + rng.uniform(0, 2), part,
                             sender=mailbox, size=rng.randint(30_000, 900_000))
        newcomer = self.plan.newcomers.get((s.id, d))
        if newcomer is not None:
            self._first_day(s, d, *newcomer)
        self._rejections(s, d)

    def _times(self, s: System, d: int) -> list[float]:
        rng = s.rng
        working = self.cal.working(d)
        volume = s.daily * (1.0 if working else s.weekend_share)
        volume *= rng.lognormvariate(0, 0.15) * WEEKDAY[self.cal.dates[d].weekday()]
        volume *= self.cal.catch_up(d)
        rush = self.plan.rush.get(s.id)
        if rush and d in rush[0]:
            volume *= rush[1]
        hours = s.hours_work if working else s.hours_off
        start = self.cal.start(d)
        times = []
        for hour, share in enumerate(hours):
            for slot in range(6):
                n = poisson(rng, volume * share / 6 * rng.gammavariate(1.5, 1 / 1.5))
                base = start + hour * HOUR + slot * 600
                times.extend(base + rng.random() * 600 for _ in range(n))
        times.sort()
        return times

    def _full_mailboxes(self, s: System, d: int) -> None:
        """Now and then a correspondent's mailbox is full for hours, the more
        correspondents the more often; its server bounces everything sent
        there (552 5.2.2, as Exchange and many others answer) or has it
        retried (452 4.2.2) until the owner makes room."""
        rng, book = s.rng, s.book
        assert book is not None
        if self.cal.working(d) and rng.random() < min(0.8, 0.02 + len(book.addresses) / 4000):
            i = book.pick(rng)
            start = at(d, rng.uniform(8, 16))
            self.quota[s.id][book.addresses[i]] = (start, start + rng.uniform(2, 10) * HOUR,
                                                   rng.random() < 0.6)

    def _answerer(self, s: System) -> Answerer:
        rng, dest, dead, quota = s.rng, self.dest, self.dead[s.id], self.quota[s.id]
        day_of, defunct = self.cal.day_of, self.defunct

        def answer(r: str, d: str, t: float, attempt: int) -> Answer:
            a = dest.answer(r, d, t, day_of(t), rng)
            if a is not None:
                return a
            if d in defunct:
                return "bounced", 550, NO_DOMAIN.format(d=d)
            if r in dead:
                return "bounced", 550, USER_UNKNOWN[zlib.crc32(d.encode()) % 6].format(r=r)
            q = quota.get(r)
            if q is not None and q[0] <= t < q[1]:
                if q[2]:
                    return "bounced", 552, QUOTA[zlib.crc32(d.encode()) % 2].format(r=r)
                return "deferred", 452, DEFERRED[4][1].format(r=r)
            if rng.random() < (s.deferral if attempt == 0 else 0.1):
                code, template = DEFERRED[rng.randrange(len(DEFERRED))]
                return "deferred", code, template.format(r=r)
            return delivered(d, r)
        return answer

    def recipients(self, s: System, robot: bool = False) -> list[tuple[str, str]]:
        rng, book = s.rng, s.book
        assert book is not None
        k = 1 if robot and s.kind != "portal" else s.recipient_count()
        out: dict[str, str] = {}
        if k > 5 and s.lists and rng.random() < 0.8:
            chosen = s.lists[bisect.bisect_right(s.lists_cum, rng.random() * s.lists_cum[-1])]
            return [(book.addresses[i], book.domains[i]) for i in chosen]
        for _ in range(k):
            if rng.random() < s.new_rate:
                r, d = self._newcomer(s, rng)
            else:
                i = book.pick(rng) if k <= 5 else book.pick_flat(rng)
                r, d = book.addresses[i], book.domains[i]
            out[r] = d
        return list(out.items())

    def _newcomer(self, s: System, rng: random.Random) -> tuple[str, str]:
        book = s.book
        assert book is not None
        if s.kind == "portal":
            d = self.world.public_domain(rng) if rng.random() < 0.9 else self.world.new_domain(rng)
            r = f"{citizen(rng)}@{d}"
        else:
            d = book.domains[book.pick(rng)] if rng.random() < 0.5 else self.world.new_domain(rng)
            r = f"{person(rng)}@{d}"
        if rng.random() < s.typo_rate:
            self.dead[s.id][r] = "user"
        elif s.kind != "portal" and rng.random() < 0.5:
            book.add(r, d)
        return r, d

    def message(self, s: System, ts: float, rcpts: list[str] | None = None,
                sender: str | None = None, size: int | None = None) -> None:
        sink, rng = self.sink, s.rng
        mailbox = sender or s.sender(self.cal.day_of(ts))
        pairs = self.recipients(s, mailbox == s.robot) if rcpts is None else \
            [(r, r.rpartition("@")[2]) for r in rcpts]
        if rcpts is None and sender is None and len(pairs) > 5 and rng.random() < 0.4:
            mailbox = s.senders[1]  # the chancellery sends much of what goes to many
        qid = sink.queue_id()
        sender = s.envelope(mailbox)
        sink.add({"ts": ts, "system": s.id, "event": "accepted", "queue_id": qid,
                  "sender": sender, "recipients": [r for r, _ in pairs],
                  "size": size or s.message_size()})
        s.stats["messages"] += 1
        deliver(sink, s.id, ts, qid, sender, pairs, self.answers[s.id], rng, s.stats)

    def _first_day(self, s: System, d: int, mailbox: str, n: int) -> None:
        """A new employee: introductions to colleagues' correspondents and
        to new ones, a mistyped address or two."""
        rng, book = s.rng, s.book
        assert book is not None
        for _ in range(n):
            ts = at(d, rng.uniform(9.5, 18))
            to = []
            for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 4)):
                if rng.random() < 0.3:
                    domain = self.world.new_domain(rng)
                    r = f"{person(rng)}@{domain}"
                    if rng.random() < 0.08:
                        self.dead[s.id][r] = "user"
                else:
                    r = book.addresses[book.pick(rng)]
                to.append(r)
            self.message(s, ts, list(dict.fromkeys(to)), sender=mailbox)

    def _batches(self, s: System, d: int) -> None:
        for kind, hour, count, to in self.plan.batches.get(s.id, ()):
            if kind in ("morning digest", "citizen notices") and not self.cal.working(d):
                continue
            start = at(d, hour + s.rng.uniform(0, 0.05))
            span = {"night report": 120.0, "morning digest": 300.0}.get(kind, 900.0)
            n = count if kind == "morning digest" else max(1, count + s.rng.randint(-3, 3))
            if kind == "citizen notices":
                n = max(1, round(count * s.rng.uniform(0.7, 1.3)))
            for i in range(n):
                if kind == "citizen notices":
                    r = f"{citizen(s.rng)}@{self.world.public_domain(s.rng)}"
                    if s.rng.random() < 0.03:
                        self.dead[s.id][r] = "user"
                else:
                    r = to[i % len(to)]
                self.message(s, start + span * i / n, [r], sender=s.robot)

    def _rejections(self, s: System, d: int) -> None:
        plan = self.plan.rejections.get(s.id)
        if plan is None:
            return
        per_day, batches = plan
        rng = s.rng
        events = []
        if self.cal.working(d):
            events += [at(d, rng.uniform(8, 19)) for _ in range(poisson(rng, per_day))]
        for start, n, span in batches:
            if self.cal.day_of(start) == d:
                events += [start + span * i / n + rng.uniform(0, 1) for i in range(n)]
        a, b = divmod(s.index, 256)
        for ts in events:
            self.sink.add({"ts": ts, "system": s.id, "event": "rejected", "reason": "sender_domain",
                           "code": 550, "client": f"10.{a}.{b}.{17 + s.index % 7}",
                           "sender": f"root@app01.{s.id}.local"})


def scanners(sink: Sink, rng: random.Random, world: World, start: float) -> None:
    """Strangers trying to relay: refused, nobody's traffic (system null)."""
    for _ in range(poisson(rng, 25)):
        sink.add({"ts": start + rng.random() * DAY, "system": None, "event": "rejected",
                  "reason": "relay_denied", "code": 550,
                  "client": f"198.51.100.{rng.randrange(1, 255)}",
                  "recipient": world.harvested(rng)})

