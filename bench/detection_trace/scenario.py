"""Who has which hard case or incident, and when.

Hard cases (legitimate, labelled so that a false suspension can be
explained): a quarter-end reporting rush (2-3x for the last working days),
circulars to 300 addresses (one sent twice, corrected), a new system
appearing mid-trace, one back from a silent fortnight, Monday-morning
backlogs (mail stuck since Friday afternoon flushed in minutes, one of them
after the Nauryz break), partners whose servers refuse the gateway with
blocklist text, misconfigured clients (wrong sender domain, one batch job
refused wholesale), a destination's outage and a destination refusing
everything for a few hours, the minutes an egress address is on
zen.spamhaus.org for something no system did before the guard takes it
out (every system's mail to servers that consult it refused), and daily
batches (night reports, morning digests, the robot's notices to
citizens at 8 in the morning). Per sender: one person mailing 300
addresses once (one message each, or one message to all), a press
officer's release to media at many domains the system never wrote to, a
new employee's first day (an address never seen, some new
correspondents, a typo or two); each labelled with its mailbox, which a
false restriction's reason names. A blocklist_spam incident's own
refusals are its alone: the trace does not make its listing hit the other
systems, since rules that stop it early would have prevented that.

Incidents: eleven kinds, several each, on systems of every size (ranks
split into big, medium, small, tiny), never in the first week (the systems
need history), at most one at a time on a system (12 h apart), none on a
system that has a hard case of its own, except the compromise inside a
large ministry, which is on the three biggest.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from . import clock
from .clock import DAY, HOUR, Calendar, at
from .delivery import EGRESS, PARTNER_TEXTS, Destinations
from .systems import System
from .world import ROLES, World, person, word

KINDS = (("spam_random", 5), ("night_drip", 4), ("mail_loop", 4), ("bounce_storm", 4),
         ("night_burst", 4), ("ministry_compromise", 3), ("blocklist_spam", 4),
         ("mailbox_spam", 3), ("mailbox_drip", 2), ("sender_rotation", 2),
         ("multi_compromise", 2))
TIERS = ("big", "medium", "small", "tiny")
# the sender-level incidents' own tiers, in order
KIND_TIERS = {"mailbox_spam": ("small", "medium", "big"), "mailbox_drip": ("medium", "big"),
              "sender_rotation": ("small", "medium"), "multi_compromise": ("medium", "big")}


@dataclass
class Case:
    """A labelled stretch of legitimate but unusual traffic."""

    kind: str
    system: str | None  # None: every system writing to that destination
    start: float
    end: float
    note: str
    sender: str | None = None  # the mailbox it is about, if one


@dataclass
class Incident:
    id: str
    kind: str
    system: str
    tier: str
    start: float
    end: float  # planned; the last accepted message once generated
    senders: list[str]  # the mailboxes it sends from (as attributed: no tag, lower case)
    params: dict[str, Any]
    accepted: list[float] = field(default_factory=list)
    by: list[int] = field(default_factory=list)  # index in `senders` of each accepted
    recipients: int = 0

    @property
    def sender(self) -> str:
        return self.senders[0]

    @property
    def prefix(self) -> str:
        """Queue ids of its messages start with this (never hex: ordinary
        ids are); the rules never look at queue ids."""
        return f"X{self.id}"


def logu(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


class Plan:
    def __init__(self, seed: int, cal: Calendar, systems: list[System], world: World,
                 dest: Destinations):
        self.rng = random.Random(f"{seed}:scenario")
        self.cal, self.systems, self.world, self.dest = cal, systems, world, dest
        self.end = cal.start(cal.days)
        self.cases: list[Case] = []
        self.incidents: list[Incident] = []
        self.used: set[str] = set()  # systems with a hard case of their own
        self.rush: dict[str, tuple[set[int], float, str]] = {}
        self.circulars: dict[tuple[str, int], list[tuple[float, list[str]]]] = {}
        self.dead: dict[str, str] = {}  # stale addresses in circular lists
        self.stuck: dict[str, tuple[float, float, float]] = {}  # from, flush at, per second
        self.rejections: dict[str, tuple[float, list[tuple[float, int, float]]]] = {}
        self.batches: dict[str, list[tuple[str, float, int, list[str]]]] = {}
        self.dnsbl: list[dict[str, Any]] = []  # the guard's own events
        # a mailbox's one-off mailing: (system, day) -> (ts, mailbox, recipients,
        # messages: one each or Bcc batches of this many, over seconds)
        self.mailings: dict[tuple[str, int], list[tuple[float, str, list[str], int, float]]] = {}
        # a new employee's first day: (system, day) -> (mailbox, messages)
        self.newcomers: dict[tuple[str, int], tuple[str, int]] = {}
        self._rush()
        self._circulars()
        self._new_and_back()
        self._backlogs()
        self._partners()
        self._clients()
        self._destinations()
        self._batches()
        self._listings()
        self._mailings()
        self._newcomers()
        self._incidents()

    def _pool(self, lo: float, hi: float, kinds: tuple[str, ...] = ("ministry", "office"),
              reuse: bool = False) -> list[System]:
        n = len(self.systems)
        first, last = int(lo * n) if lo < 1 else int(lo), int(hi * n) if hi < 1 else int(hi)
        pool = [s for s in self.systems[first:max(last, first + 1)]
                if s.kind in kinds and (reuse or s.id not in self.used) and s.first_day == 0
                and s.silent is None]
        return pool or [s for s in self.systems[2:] if s.kind in kinds] or self.systems[2:]

    def _take(self, pool: list[System]) -> System:
        s = self.rng.choice(pool)
        self.used.add(s.id)
        return s

    def _rush(self) -> None:
        last_week = self.cal.working_days(max(7, self.cal.days - 7))
        days = set(last_week[-4:] if len(last_week) > 4 else last_week)
        if not days:
            return
        for _ in range(5):
            s = self._take(self._pool(2, 0.4))
            factor = self.rng.uniform(2.0, 3.0)
            report = self.rng.choice((f"otchet@{self.systems[0].domain}",
                                      f"svod@{self.world.gov[-1]}",
                                      f"reports@{self.world.gov[-2]}"))
            self.rush[s.id] = (days, factor, report)
            self.cases.append(Case("rush", s.id, at(min(days), 0), at(max(days) + 1, 0),
                                   f"quarter-end reports: x{factor:.1f} for {len(days)} days"))

    def _circulars(self) -> None:
        days = self.cal.working_days(2)
        for i in range(6):
            s = self._take(self._pool(2, 0.6, reuse=i >= 3))
            d = self.rng.choice(days)
            ts = at(d, self.rng.uniform(10, 16))
            domains = self.rng.sample([g for g in self.world.gov if g != s.domain], 150)
            rcpts = [f"{role}@{g}" for g in domains
                     for role in self.rng.sample(("akim", "rukovodstvo", *ROLES[:4]), 2)]
            stale = self.rng.uniform(0.01, 0.04)
            self.dead.update((r, "user") for r in rcpts if self.rng.random() < stale)
            sends = [(ts, rcpts)]
            note = "one message to 300 addresses at 150 agencies"
            if i == 0:
                again = ts + self.rng.uniform(20, 40) * 60
                sends.append((again, rcpts))
                note += f", sent again corrected {round((again - ts) / 60)} min later"
            self.circulars.setdefault((s.id, d), []).extend(sends)
            self.cases.append(Case("circular", s.id, ts, sends[-1][0] + HOUR, note))

    def _new_and_back(self) -> None:
        s = self._take(self._pool(10, 0.35))
        late = [d for d in self.cal.working_days(max(7, self.cal.days // 2 - 1))]
        s.first_day = late[0] if late else self.cal.days // 2
        self.cases.append(Case("new_system", s.id, at(s.first_day, 0),
                               min(self.end, at(s.first_day + 14, 0)), "no history before"))
        s = self._take(self._pool(0.25, 0.6))
        s.silent = (2, max(2, min(15, self.cal.days - 4)))
        back = s.silent[1] + 1
        self.cases.append(Case("back_from_silence", s.id, at(back, 0),
                               min(self.end, at(back + 3, 0)),
                               f"silent for {s.silent[1] - s.silent[0] + 1} days before"))

    def _backlogs(self) -> None:
        firsts = [d for d in self.cal.working_days(7) if self.cal.days_off_before(d) >= 2]
        pool = [s for s in self._pool(3, 0.35) if s.daily >= 300] or self._pool(3, 0.35)
        for d in firsts[:2]:
            s = self._take(pool)
            pool = [p for p in pool if p.id != s.id] or pool
            last = d - self.cal.days_off_before(d) - 1
            since = at(last, self.rng.uniform(14, 16))
            flush = at(d, self.rng.uniform(8.6, 9.2))
            self.stuck[s.id] = (since, flush, self.rng.uniform(3, 8))
            self.cases.append(Case("monday_backlog", s.id, flush, flush + HOUR,
                                   f"mail stuck since {clock.local(since)} flushed"))

    def _partners(self) -> None:
        some_days = {d for d in range(self.cal.days) if self.rng.random() < 0.4}
        partners = [(self.rng.choice(self.world.corp), PARTNER_TEXTS[0], None),
                    (self.rng.choice(self.world.gov[-200:]).replace(".gov.kz", ".edu.tr"),
                     PARTNER_TEXTS[1], some_days)]
        for domain, text, days in partners:
            self.dest.partners[domain] = (text, days)
            when = "every day" if days is None else f"on {len(days)} days"
            self.cases.append(Case("blocklist_partner", None, clock.T0, self.end,
                                   f"{domain} refuses the gateway with blocklist text {when}"))
        for i in range(3):
            s = self._take(self._pool(4, 0.6, ("ministry", "office", "duty")))
            domain, _, days = partners[i % 2]
            assert s.book is not None
            s.book.insert_near_top(self.rng, f"{self.rng.choice(ROLES)}@{domain}", domain,
                                   self.rng.uniform(0.003, 0.012))
            self.cases.append(Case("blocklist_partner", s.id, clock.T0, self.end,
                                   f"writes to {domain}, which refuses with blocklist text"))

    def _clients(self) -> None:
        for i in range(4):
            s = self._take(self._pool(5, 0.9, ("ministry", "office", "duty")))
            batches = []
            if i == 0:
                for d in self.rng.sample(self.cal.working_days(3), 2):
                    start = at(d, self.rng.uniform(6.5, 11))
                    n, minutes = self.rng.randint(60, 150), self.rng.uniform(3, 8)
                    batches.append((start, n, minutes * 60))
                    self.cases.append(Case("misconfigured_batch", s.id, start,
                                           start + minutes * 60 + 600,
                                           f"a batch job's {n} messages refused (sender domain)"))
            self.rejections[s.id] = (self.rng.uniform(0.5, 5), batches)
            self.cases.append(Case("misconfigured_client", s.id, clock.T0, self.end,
                                   "a client with a wrong sender domain"))

    def _destinations(self) -> None:
        days = self.cal.working_days(8) or [self.cal.days - 1]
        d = self.rng.choice(days)
        start = at(d, self.rng.uniform(13.5, 15))
        end = start + self.rng.uniform(2, 3) * HOUR
        domain = self.systems[0].domain  # everyone writes to the ministry of finance
        self.dest.outages.setdefault(domain, []).append((start, end))
        self.cases.append(Case("destination_outage", None, start, end, f"{domain} unreachable"))
        d = self.rng.choice([x for x in days if x != d] or days)
        start = at(d, self.rng.uniform(9.5, 12))
        end = start + self.rng.uniform(1.5, 3) * HOUR
        regions = [s.domain for s in self.systems if s.id.startswith("akimat-")][:20]
        domain = self.rng.choice(regions or self.world.gov[:20])
        self.dest.misconfigured.setdefault(domain, []).append((start, end))
        self.cases.append(Case("destination_refusing", None, start, end,
                               f"{domain} refuses everything (relay access denied)"))

    def _batches(self) -> None:
        for i in range(8):
            s = self._take(self._pool(3 if i < 6 else 12, 0.5,
                                      ("ministry", "office", "duty", "portal")))
            assert s.book is not None
            if i >= 6:
                # the robot's daily notices to citizens: most of them new
                # addresses at the public providers, some mistyped
                hour = self.rng.uniform(7.5, 9)
                count = int(min(600, max(150, 0.1 * s.daily)))
                self.batches.setdefault(s.id, []).append(("citizen notices", hour, count, []))
            elif i < 3:
                hour, count = self.rng.uniform(2, 5), self.rng.randint(5, 40)
                to = [f"monitoring@{self.rng.choice(self.world.gov)}"
                      for _ in range(self.rng.randint(1, 3))]
                self.batches.setdefault(s.id, []).append(("night report", hour, count, to))
            else:
                hour = self.rng.uniform(6, 7.5)
                count = int(min(400, max(40, 0.15 * s.daily)))
                regulars = s.book.addresses[:count * 2]
                to = self.rng.sample(regulars, min(count, len(regulars)))
                self.batches.setdefault(s.id, []).append(("morning digest", hour, count, to))
            kind, hour, count, _ = self.batches[s.id][-1]
            when = f"{int(hour):02d}:{int(hour % 1 * 60):02d}"
            self.cases.append(Case("daily_batch", s.id, clock.T0, self.end,
                                   f"{kind}: {count} messages at {when}", s.robot))

    def _mailings(self) -> None:
        """One person mailing 300 addresses once (a mail merge, or one
        message), and a press officer's release to media at many domains
        the system never wrote to."""
        rng, world = self.rng, self.world
        days = self.cal.working_days(7)
        for i in range(4):
            s = self._take(self._pool(12, 0.6))
            assert s.book is not None
            d = rng.choice(days)
            ts = at(d, rng.uniform(9.5, 16.5))
            if i < 2:
                mailbox = rng.choice([p for p, j in zip(s.people, s.joined[1 + s.roles:],
                                                        strict=True) if j == 0])
                rcpts = list(dict.fromkeys(
                    s.book.addresses[s.book.pick_flat(rng)] if rng.random() < 0.6 else
                    f"{person(rng)}@{world.new_domain(rng)}" for _ in range(300)))
                batch = 1 if i == 0 else len(rcpts)
                span = rng.uniform(20, 60) * 60 if batch == 1 else 0.0
                kind, note = "person_mailing", (
                    f"{mailbox} mails {len(rcpts)} addresses, "
                    + ("one message each" if batch == 1 else "in one message"))
            else:
                roles = s.senders[1:1 + s.roles]
                mailbox = next((r for r in roles if r.startswith(("press@", "info@"))), roles[0])
                rcpts = list(dict.fromkeys(
                    f"{rng.choice(('news', 'editor', 'info', 'redaktsiya', 'press'))}@"
                    f"{rng.choice(world.corp) if rng.random() < 0.8 else world.new_domain(rng)}"
                    for _ in range(rng.randint(150, 400))))
                batch = 1 if rng.random() < 0.5 else rng.randint(20, 50)
                span = len(rcpts) / batch * rng.uniform(2, 6)
                kind, note = "press_mailing", (f"{mailbox} sends a release to {len(rcpts)} media "
                                               f"addresses, mostly at new domains")
            stale = rng.uniform(0.02, 0.08)
            self.dead.update((r, "user") for r in rcpts if rng.random() < stale)
            self.mailings.setdefault((s.id, d), []).append((ts, mailbox, rcpts, batch, span))
            self.cases.append(Case(kind, s.id, ts, ts + span + HOUR, note, mailbox))

    def _newcomers(self) -> None:
        """A new employee's first day: an address never seen before, mail
        to the system's correspondents and to some new ones."""
        rng = self.rng
        for _ in range(3):
            s = self._take(self._pool(12, 0.7))
            d = rng.choice(self.cal.working_days(7))
            mailbox = f"{person(rng)}{rng.randrange(10, 99)}@{s.domain}"
            n = rng.randint(15, 60)
            self.newcomers[(s.id, d)] = (mailbox, n)
            s.senders.append(mailbox)  # from the next day on, an ordinary colleague
            s.joined.append(d + 1)
            s.sender_cum.append(s.sender_cum[-1] * (1 + 1 / max(10, len(s.people))))
            self.cases.append(Case("new_employee", s.id, at(d, 9), at(d, 19),
                                   f"{mailbox}'s first day: {n} messages", mailbox))

    def _incidents(self) -> None:
        n = len(self.systems)
        big = 2 + max(4, round(0.08 * n))
        bounds = {"big": (2, big), "medium": (big, max(big + 1, round(0.33 * n))),
                  "small": (round(0.33 * n), round(0.7 * n)), "tiny": (round(0.7 * n), n)}
        number = 0
        for kind, count in KINDS:
            for j in range(count):
                number += 1
                tier = "huge" if kind == "ministry_compromise" else \
                    KIND_TIERS[kind][j] if kind in KIND_TIERS else TIERS[j % len(TIERS)]
                lo, hi = (j, j + 1) if tier == "huge" else bounds[tier]
                self._place(f"{number:02d}", kind, tier, lo, hi)

    def _place(self, number: str, kind: str, tier: str, lo: int, hi: int) -> None:
        rng = self.rng
        for tries in range(400):
            # widen the search if the tier is too small for the incidents asked
            first, last = (lo, hi) if tries < 200 else (2, len(self.systems))
            pool = [s for s in self.systems[first:last]
                    if (tier == "huge" or s.id not in self.used) and s.first_day == 0
                    and s.silent is None]
            if not pool:
                continue
            # spread the incidents: a system with fewer of them first
            count = {s.id: sum(i.system == s.id for i in self.incidents) for s in pool}
            fewest = min(count.values())
            s = rng.choice([s for s in pool if count[s.id] == fewest])
            start, end, params = self._timing(kind, s)
            if end > self.end - 2 * HOUR or any(
                    i.system == s.id and start < i.end + 12 * HOUR and i.start < end + 12 * HOUR
                    for i in self.incidents):
                continue
            if s.id in self.rush and self.cal.day_of(start) in self.rush[s.id][0]:
                continue
            senders = self._senders(kind, s, params)
            self.incidents.append(Incident(number, kind, s.id, tier, start, end, senders, params))
            return
        raise SystemExit(f"no room for a {kind} incident: more days or systems needed")

    def _senders(self, kind: str, s: System, p: dict[str, Any]) -> list[str]:
        """Whose mailbox it is: a person's (anyone: phishing picks no one in
        particular), the chancellery's auto-acknowledgment in half the mail
        loops, a role address sending a newsletter; a spammer's new
        addresses of the system, one after another; 2-3 people at once."""
        rng = self.rng
        people = [m for m, j in zip(s.people, s.joined[1 + s.roles:], strict=True) if j == 0]
        if kind == "bounce_storm":
            roles = s.senders[1:1 + s.roles]
            return [next((r for r in roles if r.startswith(("info@", "press@"))), roles[0])]
        if kind == "mail_loop" and rng.random() < 0.5:
            return [s.senders[1]]
        if kind == "multi_compromise":
            return rng.sample(people, min(len(people), p["mailboxes"]))
        if kind == "sender_rotation":
            known = set(s.senders)
            out: list[str] = []
            while len(out) < p["addresses"]:
                local = rng.choice((person(rng), f"{rng.choice(ROLES)}{rng.randrange(1, 99)}",
                                    word(rng, 3) + str(rng.randrange(10, 999))))
                address = f"{local}@{s.domain}"
                if address not in known:
                    known.add(address)
                    out.append(address)
            return out
        return [rng.choice(people)]

    def _day(self, working: bool | None) -> int:
        days = [d for d in range(7, self.cal.days)
                if working is None or self.cal.working(d) == working]
        return self.rng.choice(days or list(range(7, self.cal.days)))

    def _timing(self, kind: str, s: System) -> tuple[float, float, dict[str, Any]]:
        rng = self.rng
        p: dict[str, Any] = {}
        if kind == "night_drip":
            start = at(self._day(None), rng.uniform(23, 25.5))
            p["messages"] = rng.randint(200, 600)
            duration = rng.uniform(4, 7) * HOUR
        elif kind == "night_burst":
            start = at(self._day(None), rng.uniform(1, 4.5))
            p["messages"] = round(logu(rng, 300, 3000))
            duration = rng.uniform(10, 40) * 60
        elif kind in ("bounce_storm", "ministry_compromise"):
            start = at(self._day(True), rng.uniform(10, 15))
            if kind == "bounce_storm":
                p["list"] = round(logu(rng, 600, 4000))
                p["dead"] = rng.uniform(0.2, 0.4)
                p["batch"] = 1 if rng.random() < 0.7 else rng.randint(25, 50)
                p["per_hour"] = logu(rng, 400, 2000) / p["batch"]
                duration = p["list"] / p["batch"] / p["per_hour"] * HOUR
            else:
                p["per_hour"] = logu(rng, 150, 600)
                duration = rng.uniform(1.5, 3) * HOUR
        elif kind == "spam_random":
            r = rng.random()  # office hours, an evening, a day off
            d = self._day(True if r < 0.5 else None if r < 0.75 else False)
            start = at(d, rng.uniform(10, 17) if r < 0.5 else rng.uniform(19, 23) if r < 0.75
                       else rng.uniform(10, 20))
            p["per_hour"] = logu(rng, 150, 2500)
            duration = rng.uniform(0.5, 2.5) * HOUR
        elif kind == "mail_loop":
            start = at(self._day(None), rng.uniform(8, 22))
            p["per_minute"] = logu(rng, 1, 25)
            p["addresses"] = rng.randint(1, 3)
            duration = rng.uniform(0.7, 4) * HOUR
        elif kind == "mailbox_spam":  # inside the office day
            start = at(self._day(True), rng.uniform(9.5, 16))
            p["per_hour"] = logu(rng, 60, 400)
            duration = rng.uniform(1, 3) * HOUR
        elif kind == "mailbox_drip":  # low and slow, all day
            start = at(self._day(True), rng.uniform(9, 11))
            p["per_hour"] = logu(rng, 8, 40)
            duration = rng.uniform(5, 9) * HOUR
        elif kind == "sender_rotation":
            r = rng.random()
            d = self._day(True if r < 0.5 else None)
            start = at(d, rng.uniform(9, 17) if r < 0.5 else rng.uniform(0, 24))
            p["per_hour"] = logu(rng, 150, 800)
            p["per_address"] = round(logu(rng, 15, 80))
            duration = rng.uniform(1, 2.5) * HOUR
            p["addresses"] = max(2, round(p["per_hour"] * duration / HOUR / p["per_address"]))
        elif kind == "multi_compromise":  # a phishing wave: 2-3 mailboxes
            start = at(self._day(True), rng.uniform(10, 15))
            p["mailboxes"] = rng.randint(2, 3)
            p["per_hour"] = [logu(rng, 50, 300) for _ in range(p["mailboxes"])]
            p["offsets"] = [0.0] + [rng.uniform(0, 30) * 60 for _ in range(p["mailboxes"] - 1)]
            duration = rng.uniform(1.5, 3) * HOUR
        else:  # blocklist_spam
            working = rng.random() < 0.5
            start = at(self._day(True if working else None),
                       rng.uniform(9, 17) if working else rng.uniform(0, 24))
            p["per_hour"] = logu(rng, 100, 1000)
            p["content"] = rng.uniform(0.15, 0.35)  # its links are on URI lists already
            p["listed_after"] = rng.uniform(10, 40) * 60  # then the address it goes out from
            p["refused"] = rng.uniform(0.3, 0.5)
            duration = rng.uniform(1, 3) * HOUR
        return start, start + duration, p

    def _listings(self) -> None:
        """An egress address gets listed for something no system did (the
        gateway's own bounces hitting a spam trap); until the guard's next
        look takes it out of rotation, a third of every system's mail to
        servers that consult the list is refused."""
        for _ in range(2):
            listed = at(self.rng.randrange(3, self.cal.days), self.rng.uniform(0, 24))
            noticed = listed + self.rng.uniform(2, 15) * 60
            egress = self.rng.choice(EGRESS)
            self.dest.listings.append((listed, noticed))
            self.cases.append(Case("egress_listed", None, listed, noticed,
                                   f"{egress} on zen.spamhaus.org (backscatter), not yet noticed"))
            zone = {"address": egress, "zone": "zen.spamhaus.org"}
            self.dnsbl.append({"ts": noticed, "system": None, "event": "dnsbl_listed", **zone,
                               "reason": "https://www.spamhaus.org/query/ip/" + egress})
            self.dnsbl.append({"ts": noticed + self.rng.uniform(0.5, 1.5) * DAY, "system": None,
                               "event": "dnsbl_delisted", **zone})
