"""The connected systems: who they are, how much they send and how.

Sizes are heavy-tailed: two big ministries send tens of thousands of
messages on a working day, the rest follow a log-normal law (median about
80 a day, from a handful to several thousand), ministries and big agencies
at the top, regions in the middle, district akimats and small bodies at the
bottom. Kinds: offices (09-18 with a lunch dip, quiet weekends), duty
services (police, emergencies, hospitals: round the clock, weekends too)
and e-service portals (notices to citizens, one recipient each, mostly new
addresses at the public mailbox providers, more typos). Each system has its
own usual hard-bounce rate (0.3-3%, log-uniform; portals 1.5-3%), a small
usual deferral rate, its own rhythm (the hour profile jittered), mailboxes
and address book.

Mailboxes (who sends inside a system): a handful in a tiny body, thousands
in a ministry, each person's share of the mail heavy-tailed (log-normal:
a few secretaries and heads of department send much, most people a little);
a few shared role addresses (the chancellery kanc@, info@, press@, the
accountants...) and the system's notification robot (noreply@: document
management notices, portal notices), which sends a large share of the
system's mail, one recipient at a time; nearly all of a portal's. Some
systems' mail servers write the robot's address with a `+tag` (a ticket
number) and declare `subaddress = "+"`; some clients write the domain in
capitals. A few people join during the trace (new employees).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from . import clock
from .world import Book, World, person, word

MINISTRIES = (
    ("minfin", "Ministry of Finance"), ("mvd", "Ministry of Internal Affairs"),
    ("edu", "Ministry of Education"), ("minzdrav", "Ministry of Health"),
    ("mfa", "Ministry of Foreign Affairs"), ("enbek", "Ministry of Labour and Social Protection"),
    ("kgd", "State Revenue Committee"), ("moa", "Ministry of Agriculture"),
    ("minjust", "Ministry of Justice"), ("economy", "Ministry of National Economy"),
    ("mdai", "Ministry of Digital Development"), ("energo", "Ministry of Energy"),
    ("miid", "Ministry of Industry and Construction"), ("transport", "Ministry of Transport"),
    ("ecogeo", "Ministry of Ecology"), ("mci", "Ministry of Culture and Information"),
    ("tourism", "Ministry of Tourism and Sport"), ("emer", "Ministry of Emergency Situations"),
    ("mod", "Ministry of Defence"), ("trade", "Ministry of Trade and Integration"),
    ("science", "Ministry of Science and Higher Education"),
    ("water", "Ministry of Water Resources"),
    ("stat", "Bureau of National Statistics"), ("prokuror", "Prosecutor General's Office"),
    ("sud", "Supreme Court"), ("afm", "Financial Monitoring Agency"),
    ("anticor", "Anti-Corruption Agency"), ("ardfm", "Financial Market Regulation Agency"),
)
REGIONS = ("astana", "almaty", "shymkent", "abay", "akmola", "aktobe", "almaty-obl", "atyrau",
           "vko", "zhambyl", "zhetisu", "zko", "karaganda", "kostanay", "kyzylorda",
           "mangystau", "pavlodar", "sko", "turkestan", "ulytau")
PORTALS = (("egov-notify", "e-Government portal notices"),
           ("enbek-notify", "Labour exchange notices"),
           ("kgd-cabinet", "Taxpayer's cabinet notices"),
           ("edu-portal", "School enrolment portal"))
DUTY = (("police-astana", "Police of Astana"), ("ambulance-almaty", "Ambulance of Almaty"),
        ("dchs-karaganda", "Emergencies of Karaganda region"),
        ("hosp-shymkent", "City hospital of Shymkent"),
        ("police-almaty", "Police of Almaty"), ("dchs-aktobe", "Emergencies of Aktobe region"),
        ("hosp-pavlodar", "Regional hospital of Pavlodar"),
        ("railway-dispatch", "Railway dispatch"))

# recipients per message: (fewest, most, probability)
RECIPIENTS = ((1, 1, 0.74), (2, 2, 0.12), (3, 3, 0.055), (4, 4, 0.025), (5, 5, 0.015),
              (6, 10, 0.025), (11, 25, 0.012), (26, 60, 0.006), (61, 120, 0.002))
RECIPIENTS_CUM = list(itertools.accumulate(p for _, _, p in RECIPIENTS))
LIST_SIZES = ((6, 10, 0.5), (11, 25, 0.3), (26, 60, 0.15), (61, 120, 0.05))


@dataclass
class System:
    id: str
    name: str
    kind: str  # ministry, office, duty, portal
    daily: float  # messages on an ordinary working day
    index: int
    rng: random.Random = field(repr=False)
    bounce: float = 0.01  # the usual hard-bounce rate it was built for
    deferral: float = 0.01
    weekend_share: float = 0.05
    new_rate: float = 0.03  # a recipient who is a new correspondent
    typo_rate: float = 0.05  # a new correspondent's address that bounces
    hours_work: list[float] = field(default_factory=list, repr=False)
    hours_off: list[float] = field(default_factory=list, repr=False)
    # its mailboxes: the robot first, then role addresses, then people
    senders: list[str] = field(default_factory=list, repr=False)
    sender_cum: list[float] = field(default_factory=list, repr=False)
    joined: list[int] = field(default_factory=list, repr=False)  # day each starts sending
    robot_share: float = 0.0  # of the messages, the notification robot's
    roles: int = 0  # senders[1:1 + roles] are role addresses
    subaddress: str | None = None  # "+": the robot tags its envelope sender
    upper_domain: float = 0.0  # share of people's mail with the domain in capitals
    book: Book | None = field(default=None, repr=False)
    # its distribution lists (indices into the book), most used first
    lists: list[list[int]] = field(default_factory=list, repr=False)
    lists_cum: list[float] = field(default_factory=list, repr=False)
    first_day: int = 0  # a new system sends from this day on
    silent: tuple[int, int] | None = None  # days (first, last) it sends nothing
    # ordinary traffic as generated: attempts, hard bounces, deferrals, messages
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("attempts", "bounced", "deferred", "messages"), 0))

    @property
    def domain(self) -> str:
        return f"{self.id}.gov.kz"

    @property
    def network(self) -> str:
        a, b = divmod(self.index, 256)
        return f"10.{a}.{b}.0/24"

    def size_class(self) -> str:
        return size_class(self.daily)

    def active(self, d: int) -> bool:
        if d < self.first_day:
            return False
        return self.silent is None or not self.silent[0] <= d <= self.silent[1]

    @property
    def robot(self) -> str:
        return self.senders[0]

    @property
    def people(self) -> list[str]:
        return self.senders[1 + self.roles:]

    def sender(self, d: int, robot: bool = True) -> str:
        """The mailbox of one ordinary message on day `d` (not yet the
        envelope: see `envelope`); a person's or a role's if not `robot`."""
        rng = self.rng
        if robot and rng.random() < self.robot_share:
            return self.robot
        for _ in range(4):
            i = bisect.bisect_right(self.sender_cum, rng.random() * self.sender_cum[-1])
            if self.joined[i] <= d:
                return self.senders[i]
        return self.senders[1]

    def envelope(self, mailbox: str) -> str:
        """The MAIL FROM its server writes for `mailbox`: the robot's with a
        ticket tag where the system uses subaddresses, now and then a
        person's with the domain in capitals."""
        rng = self.rng
        if mailbox == self.robot and self.subaddress and rng.random() < 0.8:
            local, _, domain = mailbox.partition("@")
            return f"{local}{self.subaddress}{rng.randrange(10**5, 10**7)}@{domain}"
        if self.upper_domain and rng.random() < self.upper_domain:
            local, _, domain = mailbox.partition("@")
            return f"{local}@{domain.upper()}"
        return mailbox

    def recipient_count(self) -> int:
        if self.kind == "portal":
            return 1 if self.rng.random() < 0.97 else 2
        i = bisect.bisect_right(RECIPIENTS_CUM, self.rng.random() * RECIPIENTS_CUM[-1])
        lo, hi, _ = RECIPIENTS[min(i, len(RECIPIENTS) - 1)]
        return self.rng.randint(lo, hi)

    def message_size(self) -> int:
        return min(25_000_000, int(self.rng.lognormvariate(math.log(24_000), 1.2)) + 600)


def size_class(daily: float) -> str:
    for limit, name in ((20, "tiny"), (200, "small"), (2000, "medium"), (10000, "large")):
        if daily < limit:
            return name
    return "huge"


def roster(n: int) -> list[tuple[str, str, str]]:
    """`n` systems as (id, name, kind), biggest first as their sizes will
    be: ministries and agencies, then regions, portals and duty services
    among them, then district akimats and small bodies."""
    head = [(i, name, "ministry") for i, name in MINISTRIES]
    head += [(f"akimat-{r}", f"Akimat of {r.capitalize()}", "office") for r in REGIONS]
    rng = random.Random("roster")
    seen = {i for i, _, _ in head}
    while len(head) < n - len(PORTALS) - len(DUTY):
        stem = word(rng, 2)
        i, name = rng.choice(((f"akimat-{stem}", f"Akimat of {stem.capitalize()} district"),
                              (f"school-{stem}", f"Education department of {stem.capitalize()}"),
                              (f"court-{stem}", f"Court of {stem.capitalize()} district"),
                              (f"ugd-{stem}", f"State revenue office of {stem.capitalize()}")))
        if i not in seen:
            seen.add(i)
            head.append((i, name, "office"))
    for pos, (i, name) in zip((3, 9, 16, 33), PORTALS, strict=True):
        head.insert(min(pos, len(head)), (i, name, "portal"))
    for pos, (i, name) in zip((12, 22, 30, 41, 55, 68, 80, 95), DUTY, strict=True):
        head.insert(min(pos, len(head)), (i, name, "duty"))
    return head[:n]


def build(seed: int, n: int, scale: float) -> tuple[list[System], World]:
    rng = random.Random(f"{seed}:systems")
    # log-normal quantiles (median 80 a day), jittered: the same shape of
    # tail for every seed
    law = statistics.NormalDist(math.log(80), 1.7)
    rest = max(0, n - 2)
    sizes = sorted((min(8000.0, max(3.0, math.exp(law.inv_cdf(1 - (i + 0.5) / rest))
                                    * rng.lognormvariate(0, 0.15))) for i in range(rest)),
                   reverse=True)
    sizes = [30000.0, 14000.0] + sizes
    people = roster(n)
    world = World(random.Random(f"{seed}:world"), [f"{i}.gov.kz" for i, _, _ in people])
    systems = []
    for index, ((sid, name, kind), daily) in enumerate(zip(people, sizes, strict=True)):
        srng = random.Random(f"{seed}:system:{sid}")
        s = System(sid, name, kind, daily * scale, index, srng)
        _habits(s, srng, world)
        systems.append(s)
    return systems, world


def _habits(s: System, rng: random.Random, world: World) -> None:
    v = max(s.daily, 1.0)
    s.deferral = rng.uniform(0.003, 0.015)
    if s.kind == "portal":
        s.bounce = rng.uniform(0.015, 0.03)
        s.weekend_share = rng.uniform(0.3, 0.5)
        work, off = clock.PORTAL, clock.PORTAL
    elif s.kind == "duty":
        s.bounce = math.exp(rng.uniform(math.log(0.003), math.log(0.03)))
        s.weekend_share = rng.uniform(0.4, 0.7)
        work, off = clock.ROUND_THE_CLOCK, clock.ROUND_THE_CLOCK
    else:
        s.bounce = math.exp(rng.uniform(math.log(0.003), math.log(0.03)))
        s.weekend_share = rng.uniform(0.02, 0.08)
        work, off = clock.OFFICE, clock.OFF_DAY
    # each office keeps its own hours: the profile jittered, some an hour early
    early = rng.random() < 0.25
    jitter = [rng.lognormvariate(0, 0.2) for _ in range(24)]
    shifted = work[1:] + work[:1] if early else work
    s.hours_work = clock.normalised([w * j for w, j in zip(shifted, jitter, strict=True)])
    s.hours_off = clock.normalised([w * j for w, j in zip(off, jitter, strict=True)])
    if s.kind == "portal":
        s.new_rate, s.typo_rate = 0.85, min(0.5, s.bounce / 0.85)
    else:
        # a ministry's few hundred new correspondents a day are a small share
        s.new_rate = rng.uniform(0.015, 0.05) * min(1.0, (500 / v) ** 0.4)
        s.typo_rate = min(0.3, 3 * s.bounce)
    _mailboxes(s, rng, v)
    n_domains = max(4, min(1500, round(4 * v ** 0.5)))
    n_addresses = max(8, min(12000, round(12 * v ** 0.6)))
    if s.kind == "portal":
        n_domains, n_addresses = 40, 400  # its few regulars; citizens come new
    s.book = Book(rng, world, s.domain, n_domains, n_addresses,
                  0.9 if v > 300 else 1.0, 0.55 * s.bounce)
    # a few fixed lists (all heads of department, the regions, a working
    # group) that bigger messages go to, stale members and all
    for _ in range(2 + int(2 * math.log10(v + 1))):
        lo, hi, _p = rng.choices(LIST_SIZES, weights=[p for *_, p in LIST_SIZES])[0]
        members = dict.fromkeys(s.book.pick_flat(rng) for _ in range(rng.randint(lo, hi)))
        s.lists.append(list(members))
    s.lists_cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(s.lists))))


ROLE_SENDERS = ("info", "press", "buh", "kadry", "zakup", "priemnaya", "yurist", "support")


def _mailboxes(s: System, rng: random.Random, v: float) -> None:
    """The robot, the role addresses and the people of a system, with
    their shares of its mail (see the module's docstring)."""
    n_people = min(5000, max(rng.randint(2, 5), round(v ** 0.78 * rng.uniform(0.8, 1.2))))
    people: dict[str, None] = {}
    while len(people) < n_people:
        name = person(rng)
        if name in people:
            name = f"{name}{rng.randrange(2, 100)}"
        people[name] = None
    n_roles = 1 + min(len(ROLE_SENDERS), int(math.log10(v + 1) * 2 * rng.uniform(0.5, 1.2)))
    roles = ["kanc", *rng.sample(ROLE_SENDERS, n_roles - 1)]
    if s.kind == "portal":
        s.robot_share = rng.uniform(0.85, 0.95)
    elif s.kind == "ministry":
        s.robot_share = rng.uniform(0.15, 0.45)
    elif s.kind == "duty":
        s.robot_share = rng.uniform(0.1, 0.4)
    else:
        s.robot_share = rng.uniform(0.0, 0.1) if v < 20 else rng.uniform(0.05, 0.35)
    s.senders = [f"noreply@{s.domain}", *(f"{r}@{s.domain}" for r in roles),
                 *(f"{p}@{s.domain}" for p in people)]
    s.roles = len(roles)
    # shares of the mail that is not the robot's: the chancellery 3-10%,
    # other roles 0.5-3% each, the people the rest, log-normal
    weights = [0.0, rng.uniform(0.03, 0.1)] + [rng.uniform(0.005, 0.03) for _ in roles[1:]]
    left = max(0.3, 1 - sum(weights))
    mine = [rng.lognormvariate(0, 1.4) for _ in people]
    total = sum(mine)
    weights += [left * w / total for w in mine]
    s.sender_cum = list(itertools.accumulate(weights))
    # nearly everyone is there from the start; a few join during the trace
    s.joined = [0] * (1 + len(roles)) + [0 if rng.random() < 0.985 else rng.randrange(1, 60)
                                         for _ in people]
    if v >= 20 and rng.random() < 0.3:
        s.subaddress = "+"
    if rng.random() < 0.1:
        s.upper_domain = 0.05


def write_config(path: Path, systems: list[System], note: str) -> None:
    """Every system declared; no [anomaly]: the rules are mailgw's defaults."""
    lines = [f"# {note}", "# rules: mailgw's defaults (mailgw/config.py)", ""]
    for s in systems:
        lines += ["[[systems]]", f'id = "{s.id}"', f'name = "{s.name}"',
                  f'owners = ["admin@{s.domain}"]', f'networks = ["{s.network}"]',
                  f'sender_domains = ["{s.domain}"]']
        if s.subaddress:
            lines.append(f'subaddress = "{s.subaddress}"')
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
