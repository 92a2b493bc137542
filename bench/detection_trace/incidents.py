"""The labelled abnormal traffic, on top of the system's ordinary day.

- spam_random: a compromised mailbox sends spam to a harvested list (big
  providers and a long tail of domains seen once), 150-2500 an hour, day or
  evening or weekend, half an hour to 2.5 hours;
- night_drip: a few hundred spam messages spread over 4-7 night hours;
- mail_loop: a forwarding rule and an autoresponder ping-pong: the same
  1-3 addresses again and again, 1-25 a minute, for up to 4 hours (all
  delivered; the far end starts throttling after a while);
- bounce_storm: a newsletter to an old list (600-4000 addresses, 20-40%
  dead), one recipient per message or in Bcc batches, during office hours;
- night_burst: 300-3000 spam messages within 10-40 minutes at night;
- ministry_compromise: one mailbox of a big ministry sends 150-600 spam
  messages an hour for a few office hours, inside its own heavy traffic;
- blocklist_spam: a spam run whose links are on URI blocklists (15-35%
  of its attempts refused naming one) and which gets the address it goes
  out from listed after 10-40 minutes (then 30-50% more refused naming
  zen.spamhaus.org, SpamCop, Barracuda or Microsoft's list).

Sender-level incidents (issue 14), each labelled with its mailboxes:

- mailbox_spam: one person's mailbox spams a harvested list inside the
  office day, 60-400 an hour for 1-3 hours (a small, a medium and a big
  system);
- mailbox_drip: one mailbox, 8-40 spam messages an hour all day (5-9 h);
- sender_rotation: a spammer writing MAIL FROM with addresses of the
  system that never sent before, a new one every 15-80 messages, 150-800
  an hour for 1-2.5 hours;
- multi_compromise: a phishing wave, 2-3 people's mailboxes spamming at
  once, 50-300 an hour each, starting within half an hour of each other.

The older kinds are one mailbox's too: a person's (spam, drips, bursts,
the ministry compromise), the newsletter's role address (info@ or
press@; the bounce storm), a person's forwarding rule or the chancellery's
auto-acknowledgment (mail loops).

About 30% of spam bounces (domains that do not exist, unknown users,
refusals for its content), and some is greylisted. An incident's messages
carry the incident's queue-id prefix; its sender is a real mailbox of the
system (the one compromised), never anything a rule could tell apart.
"""

from __future__ import annotations

import random
import zlib

from .clock import DAY, HOUR, T0
from .delivery import (
    NO_DOMAIN,
    SPAM_BLOCKLIST,
    SPAM_CONTENT,
    URI_BLOCKLIST,
    USER_UNKNOWN,
    Answer,
    Answerer,
    Destinations,
    deliver,
    delivered,
    text,
)
from .scenario import Incident
from .sink import Sink
from .world import SPAM_PROVIDERS, World, citizen

MAX_RECIPIENTS = {"spam_random": 6, "night_drip": 2, "night_burst": 4,
                  "ministry_compromise": 3, "blocklist_spam": 5, "mailbox_spam": 4,
                  "mailbox_drip": 2, "sender_rotation": 6, "multi_compromise": 3}


class Incidents:
    def __init__(self, seed: int, world: World, dest: Destinations, sink: Sink):
        self.seed, self.world, self.dest, self.sink = seed, world, dest, sink
        self.stale: set[str] = set()  # a bounce storm's dead addresses

    def run(self, inc: Incident) -> None:
        rng = random.Random(f"{self.seed}:incident:{inc.id}")
        p = inc.params
        if inc.kind in ("night_drip", "night_burst"):
            times = sorted(rng.uniform(inc.start, inc.end) for _ in range(p["messages"]))
        elif inc.kind == "mail_loop":
            times = self._poisson(rng, inc.start, inc.end, p["per_minute"] * 60)
        elif inc.kind == "bounce_storm":
            batches = -(-p["list"] // p["batch"])
            times = [inc.start + (i + rng.random()) * HOUR / p["per_hour"]
                     for i in range(batches)]
        elif inc.kind == "multi_compromise":
            times = sorted((t, i) for i, (rate, offset) in enumerate(
                zip(p["per_hour"], p["offsets"], strict=True))
                for t in self._poisson(rng, inc.start + offset, inc.end, rate))
        else:
            times = self._poisson(rng, inc.start, inc.end, p["per_hour"])
        if inc.kind == "multi_compromise":
            by = [i for _, i in times]
            times = [t for t, _ in times]
        elif inc.kind == "sender_rotation":
            # a new MAIL FROM every `per_address` messages or so
            by, i, left = [], 0, p["per_address"]
            for _ in times:
                if left <= 0 and i + 1 < len(inc.senders):
                    i, left = i + 1, max(3, round(p["per_address"] * rng.uniform(0.5, 1.5)))
                by.append(i)
                left -= 1
        else:
            by = [0] * len(times)
        rcpts = self._recipients(inc, rng, len(times))
        answer = self._answerer(inc, rng)
        sink = self.sink
        for n, (ts, to, who) in enumerate(zip(times, rcpts, by, strict=True)):
            qid = f"{inc.prefix}{n:08X}"
            sender = inc.senders[who]
            sink.add({"ts": ts, "system": inc.system, "event": "accepted", "queue_id": qid,
                      "sender": sender, "recipients": [r for r, _ in to],
                      "size": rng.randint(2_000, 15_000)})
            deliver(sink, inc.system, ts, qid, sender, to, answer, rng)
            inc.recipients += len(to)
        inc.accepted = [round(t, 3) for t in times]
        inc.by = by
        inc.end = inc.accepted[-1]
        if inc.kind == "sender_rotation":  # addresses it never came to
            inc.senders = inc.senders[:max(by) + 1]

    @staticmethod
    def _poisson(rng: random.Random, start: float, end: float, per_hour: float) -> list[float]:
        times, t = [], start
        while True:
            t += rng.expovariate(per_hour / HOUR)
            if t >= end:
                return times or [start]
            times.append(t)

    def _recipients(self, inc: Incident, rng: random.Random, n: int) -> list[list[tuple[str, str]]]:
        if inc.kind == "mail_loop":
            hosts = ("mail.ru", "gmail.com", rng.choice(self.world.corp))
            far = [f"{citizen(rng)}@{rng.choice(hosts)}" for _ in range(inc.params["addresses"])]
            return [[(far[i % len(far)], far[i % len(far)].rpartition("@")[2])] for i in range(n)]
        if inc.kind == "bounce_storm":
            old = [f"{citizen(rng)}@{self._old_domain(rng)}" for _ in range(inc.params["list"])]
            self.stale = {r for r in old if rng.random() < inc.params["dead"]}
            b = inc.params["batch"]
            return [[(r, r.rpartition("@")[2]) for r in old[i:i + b]]
                    for i in range(0, len(old), b)]
        most = MAX_RECIPIENTS[inc.kind]
        out = []
        for _ in range(n):
            k = min(most, 1 + int(rng.expovariate(1.0)))
            to = dict.fromkeys(self.world.harvested(rng) for _ in range(k))
            out.append([(r, r.rpartition("@")[2]) for r in to])
        return out

    def _old_domain(self, rng: random.Random) -> str:
        return self.world.public_domain(rng) if rng.random() < 0.5 else rng.choice(self.world.corp)

    def _answerer(self, inc: Incident, rng: random.Random) -> Answerer:
        dest, p = self.dest, inc.params

        def day(t: float) -> int:
            return int((t - T0) // DAY)
        if inc.kind == "mail_loop":
            throttled = inc.start + 40 * 60

            def loop(r: str, d: str, t: float, attempt: int) -> Answer:
                if t > throttled and attempt == 0 and rng.random() < 0.3:
                    return ("deferred", 450, "450 4.2.1 The user you are trying to contact is "
                            "receiving mail at a rate that prevents additional messages")
                return delivered(d, r)
            return loop
        if inc.kind == "bounce_storm":
            stale = self.stale

            def newsletter(r: str, d: str, t: float, attempt: int) -> Answer:
                a = dest.answer(r, d, t, day(t), rng)
                if a is not None:
                    return a
                if r in stale:
                    if zlib.crc32(d.encode()) % 20 == 0:
                        return "bounced", 550, NO_DOMAIN.format(d=d)
                    return "bounced", 550, USER_UNKNOWN[zlib.crc32(d.encode()) % 6].format(r=r)
                if attempt == 0 and rng.random() < 0.05:
                    return "deferred", 451, "451 4.7.1 Greylisted, try again later"
                return delivered(d, r)
            return newsletter
        listed = inc.start + p.get("listed_after", float("inf"))
        refused, content = p.get("refused", 0.0), p.get("content", 0.0)
        known = set(SPAM_PROVIDERS)

        def spam(r: str, d: str, t: float, attempt: int) -> Answer:
            a = dest.answer(r, d, t, day(t), rng)
            if a is not None:
                return a
            if content and rng.random() < content:
                return "bounced", 554, rng.choice(URI_BLOCKLIST)
            if t >= listed and rng.random() < refused:
                return "bounced", 554, text(rng.choice(SPAM_BLOCKLIST), r, d, rng)
            if d not in known and zlib.crc32(d.encode()) % 100 < 20:
                return "bounced", 550, NO_DOMAIN.format(d=d)
            if zlib.crc32(r.encode()) % 100 < 15:
                return "bounced", 550, USER_UNKNOWN[zlib.crc32(d.encode()) % 6].format(r=r)
            if rng.random() < 0.06:
                return "bounced", 550, text(rng.choice(SPAM_CONTENT), r, d, rng)
            if attempt == 0 and rng.random() < 0.15:
                return "deferred", 451, "451 4.7.1 Greylisted, try again later"
            return delivered(d, r)
        return spam

