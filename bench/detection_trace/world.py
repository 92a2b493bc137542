"""Who the systems write to.

The world: about 4,000 recipient domains (government, the public mailbox
providers, Kazakh companies, foreign ones, a few defunct agency domains
that no longer resolve), with a popularity of their own. Each system has an
address book drawn from it: more domains and addresses the bigger the
system, picked with Zipf-like popularity (a few correspondents get most of
its mail, a long tail gets a message now and then). Some addresses in a
book are dead (people who left, old domains): they bounce every time they
are used, which is where a system's usual bounce rate comes from. New
correspondents trickle in; some of them are typos that bounce.
"""

from __future__ import annotations

import bisect
import itertools
import random

SYLLABLES = ("al", "ma", "ty", "as", "ta", "na", "kar", "gan", "da", "shy", "ak", "to",
             "be", "tau", "ky", "zyl", "or", "su", "kol", "bay", "zhan", "er", "tal", "sar",
             "ar", "ka", "tur", "ke", "ba", "tyr", "sem", "ey", "pav", "lo", "dar", "kos",
             "nai", "ek", "ib", "as", "tu", "ra", "mun", "ai", "zhol", "dos", "tyk", "ur",
             "sha", "rin", "kum", "ot", "bel", "sa", "ly", "mir", "ten", "gi", "zar", "in")
FIRST = ("aidar", "askar", "asel", "aigul", "aliya", "arman", "bolat", "dana", "dauren",
         "dina", "erlan", "gulnara", "kairat", "madina", "marat", "nurlan", "saule",
         "serik", "timur", "yerzhan", "zhanna", "aizhan", "olga", "sergey", "irina",
         "azamat", "bauyrzhan", "aruzhan", "dilnaz", "nursultan", "ainur", "yelena")
SURNAME = ("nurlan", "serik", "askar", "erlan", "dauren", "aidar", "marat", "bolat",
           "kairat", "zhaksy", "tulegen", "abay", "omar", "sultan", "bekmagambet", "ismail",
           "kasym", "amangeldi", "zhumabay", "sagyndyk", "mukhamed", "baimukhan", "ivan",
           "petr", "kuanysh", "temir", "akhmet", "orazbay", "yesim", "smagul")
SUFFIX = ("ov", "ova", "ev", "eva", "uly", "kyzy", "bekov", "bekova", "in", "ina")
ROLES = ("kanc", "info", "priemnaya", "buh", "kadry", "press", "office", "secretary",
         "kense", "doc", "reception", "zakup", "yurist", "it", "support", "hr", "pr")

# the public mailbox providers Kazakh citizens and officials use
PUBLIC = {"mail.ru": 30, "gmail.com": 28, "yandex.ru": 8, "yandex.kz": 6, "inbox.ru": 5,
          "bk.ru": 5, "list.ru": 4, "outlook.com": 3, "hotmail.com": 2, "icloud.com": 2,
          "yahoo.com": 1.5, "rambler.ru": 1, "ya.ru": 1, "internet.ru": 0.5}
# the big providers of a spammer's harvested list
SPAM_PROVIDERS = ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com",
                  "mail.ru", "yandex.ru", "gmx.de", "web.de", "qq.com", "163.com",
                  "orange.fr", "libero.it", "wp.pl", "seznam.cz", "comcast.net")
SPAM_TLDS = (".com", ".com", ".com", ".com", ".net", ".org", ".ru", ".de", ".info", ".biz",
             ".com.br", ".in", ".it", ".fr", ".pl", ".es", ".co.uk", ".jp", ".cn", ".kz")
FOREIGN_TLDS = (".com", ".org", ".ru", ".uz", ".kg", ".de", ".com.tr", ".cn", ".net", ".eu",
                ".int", ".by", ".az", ".kr", ".ae")


def word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts))


def person(rng: random.Random) -> str:
    surname = rng.choice(SURNAME) + rng.choice(SUFFIX)
    r = rng.random()
    if r < 0.45:
        return f"{rng.choice(FIRST)[0]}.{surname}"
    if r < 0.8:
        return f"{rng.choice(FIRST)}.{surname}"
    return f"{rng.choice(FIRST)}{surname[:4]}{rng.randrange(100)}"


def citizen(rng: random.Random) -> str:
    """A private mailbox's local part: names, nicknames and digits."""
    r = rng.random()
    if r < 0.5:
        joint = rng.choice(("", ".", "_"))
        return f"{rng.choice(FIRST)}{joint}{rng.choice(SURNAME)}{rng.randrange(1960, 2010)}"
    if r < 0.8:
        return f"{rng.choice(FIRST)}{rng.randrange(1, 10000)}"
    return f"{word(rng, 3)}{rng.randrange(100)}"


def weighted_sample(rng: random.Random, items: list[str], weights: list[float],
                    n: int) -> list[str]:
    """`n` distinct items, likelier the heavier, in a popularity-like order
    (Efraimidis-Spirakis keys)."""
    pairs = zip(items, weights, strict=True)
    keyed = sorted(((rng.random() ** (1.0 / w), item) for item, w in pairs), reverse=True)
    return [item for _, item in keyed[:n]]


def zipf_cum(n: int, s: float, start: int = 0) -> list[float]:
    return list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(start, start + n)))


class World:
    def __init__(self, rng: random.Random, system_domains: list[str]):
        taken = set(system_domains)

        def fresh(make) -> str:
            while True:
                name = make()
                if name not in taken:
                    taken.add(name)
                    return name

        gov = list(system_domains) + [fresh(lambda: f"{word(rng, rng.choice((2, 3)))}.gov.kz")
                                      for _ in range(260)]
        self.defunct = [fresh(lambda: f"{word(rng, 3)}.gov.kz") for _ in range(4)]
        corp = [fresh(lambda: word(rng, rng.choice((2, 3))) + rng.choice((".kz", ".kz", ".com.kz")))
                for _ in range(2600)]
        foreign = [fresh(lambda: f"{word(rng, rng.choice((2, 3)))}{rng.choice(FOREIGN_TLDS)}")
                   for _ in range(900)]
        self.gov = gov
        self.corp = corp
        self.public = list(PUBLIC)
        self.domains: list[str] = []
        self.weights: list[float] = []
        for i, d in enumerate(gov):
            self._add(d, 4.0 / (1 + i / 40) ** 0.6)
        for d, w in PUBLIC.items():
            self._add(d, w * 1.2)
        for i, d in enumerate(corp):
            self._add(d, 3.0 / (1 + i / 10) ** 0.9)
        for i, d in enumerate(foreign):
            self._add(d, 1.0 / (1 + i / 10) ** 0.9)
        for d in self.defunct:
            self._add(d, 1.0)
        self.public_cum = list(itertools.accumulate(PUBLIC.values()))
        # mail servers that refuse a client listed on zen.spamhaus.org:
        # many agencies' and companies' own servers, none of the big providers
        self.zen_users = {d for d in gov + corp if rng.random() < 0.4}

    def _add(self, domain: str, weight: float) -> None:
        self.domains.append(domain)
        self.weights.append(weight)

    def pick_domains(self, rng: random.Random, n: int, exclude: str) -> list[str]:
        picked = weighted_sample(rng, self.domains, self.weights, n + 1)
        return [d for d in picked if d != exclude][:n]

    def new_domain(self, rng: random.Random) -> str:
        return rng.choices(self.domains, weights=self.weights)[0]

    def public_domain(self, rng: random.Random) -> str:
        r = rng.random() * self.public_cum[-1]
        return self.public[bisect.bisect_right(self.public_cum, r)]

    def harvested(self, rng: random.Random) -> str:
        """An address off a spammer's list: big providers, and a long tail
        of domains seen once."""
        if rng.random() < 0.4:
            return f"{citizen(rng)}@{rng.choice(SPAM_PROVIDERS)}"
        return f"{citizen(rng)}@{word(rng, rng.choice((2, 3, 3, 4)))}{rng.choice(SPAM_TLDS)}"


class Book:
    """A system's correspondents: addresses with Zipf-like popularity, some
    dead (`dead[i]`: "" alive, "user" gone, "domain" no longer resolves)."""

    def __init__(self, rng: random.Random, world: World, own: str, n_domains: int,
                 n_addresses: int, s: float, dead_mass: float):
        domains = world.pick_domains(rng, n_domains, own)
        # an old domain is among the least used, and only if its share of
        # the mail stays within the dead addresses' (a small book has none)
        live = [d for d in domains if d not in world.defunct]
        domains = live + [d for d in domains if d in world.defunct]
        domain_cum = zipf_cum(len(domains), 1.0)
        share = [(b - a) / domain_cum[-1] for a, b in itertools.pairwise([0.0, *domain_cum])]
        domains = live + [d for d, w in zip(domains[len(live):], share[len(live):], strict=True)
                          if w <= dead_mass / 2]
        domain_cum = domain_cum[:len(domains)]
        seen: set[str] = set()
        self.addresses: list[str] = []
        self.domains: list[str] = []
        self.dead: list[str] = []
        for _ in range(n_addresses):
            domain = domains[bisect.bisect_right(domain_cum, rng.random() * domain_cum[-1])]
            local = rng.choice(ROLES) if rng.random() < 0.15 else (
                citizen(rng) if domain in PUBLIC else person(rng))
            address = f"{local}@{domain}"
            if address in seen:
                continue
            seen.add(address)
            self.addresses.append(address)
            self.domains.append(domain)
            self.dead.append("domain" if domain in world.defunct else "")
        self.known_domains = set(self.domains)
        self.s = s
        self.cum = zipf_cum(len(self.addresses), s)
        # a distribution list reaches the tail almost as often as the head
        self.flat_cum = zipf_cum(len(self.addresses), 0.3)
        self._kill(rng, dead_mass)

    def _kill(self, rng: random.Random, mass: float) -> None:
        """Mark dead addresses outside the top few until their share of the
        picks is `mass` (old domains count towards it)."""
        total = self.cum[-1]
        weight = [self.cum[0]] + [b - a for a, b in itertools.pairwise(self.cum)]
        dead = sum(w for w, d in zip(weight, self.dead, strict=True) if d) / total
        order = list(range(min(8, len(weight)), len(weight)))
        rng.shuffle(order)
        for i in order:
            if dead >= mass:
                break
            share = weight[i] / total
            if not self.dead[i] and dead + share / 2 <= mass:
                self.dead[i] = "user"
                dead += share

    def pick(self, rng: random.Random) -> int:
        return bisect.bisect_right(self.cum, rng.random() * self.cum[-1])

    def pick_flat(self, rng: random.Random) -> int:
        return bisect.bisect_right(self.flat_cum, rng.random() * self.flat_cum[-1])

    def add(self, address: str, domain: str) -> None:
        """A new correspondent joins the tail of the book."""
        n = len(self.addresses)
        self.addresses.append(address)
        self.domains.append(domain)
        self.dead.append("")
        self.known_domains.add(domain)
        self.cum.append(self.cum[-1] + 1.0 / (n + 1) ** self.s)
        self.flat_cum.append(self.flat_cum[-1] + 1.0 / (n + 1) ** 0.3)

    def insert_near_top(self, rng: random.Random, address: str, domain: str, share: float) -> None:
        """A regular correspondent getting about `share` of the picks (a
        partner added by hand): appended with the weight that gives it."""
        n = len(self.addresses)
        weight = self.cum[-1] * share / (1 - share)
        self.addresses.append(address)
        self.domains.append(domain)
        self.dead.append("")
        self.known_domains.add(domain)
        self.cum.append(self.cum[-1] + weight)
        self.flat_cum.append(self.flat_cum[-1] + 1.0 / (n + 1) ** 0.3)
