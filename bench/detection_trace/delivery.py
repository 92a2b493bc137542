"""What the next hops answer, as the gateway's event log records it.

One event per recipient per attempt, a little after the `accepted`: the
recipients of one domain share a transaction (a delay of a second or two
after the message was queued); a deferred recipient is tried again after
5, 10, 20, 40 minutes, then every hour (+-20%), like the gateway's queue.

Besides the recipient's own fate (a dead address bounces, a full mailbox
bounces for a while, a few attempts are greylisted or throttled), the
destinations have conditions of their own, the same for every system that
writes to them: an outage (every attempt deferred), a misconfigured server
refusing everything for a few hours, a partner whose server refuses the
gateway's addresses with blocklist text (an over-eager list that names
whole networks), and, while one of the gateway's egress addresses is on
zen.spamhaus.org before the blocklist guard takes it out of rotation, a
third of every system's mail to servers that consult it refused.

A message with a recipient that bounced brings the gateway's report (a
DSN) to its sender: the gateway's own mail, `"origin": "dsn"` in the log,
which is no system's traffic and must not be counted as such.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

from .sink import Sink

EGRESS = ("203.0.113.10", "203.0.113.11", "203.0.113.12")

DELIVERED = ("250 2.0.0 Ok: queued as {q}", "250 2.6.0 <{q}@mail> Queued mail for delivery",
             "250 OK id=1t{q}", "250 2.0.0 OK {q} - gsmtp")
USER_UNKNOWN = (
    "550 5.1.1 <{r}>: Recipient address rejected: User unknown in virtual mailbox table",
    "550 5.1.1 The email account that you tried to reach does not exist. Please try "
    "double-checking the recipient's email address for typos or unnecessary spaces.",
    "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
    "550 Message was not accepted -- invalid mailbox. Local mailbox {r} is unavailable: "
    "user not found",
    "550 5.1.1 <{r}>: user does not exist",
    "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)",
)
NO_DOMAIN = "550 5.4.4 Host or domain name not found. Name service error for name={d} type=MX"
QUOTA = ("552 5.2.2 <{r}>: Recipient address rejected: Mailbox full",
         "552 5.2.2 Mailbox quota exceeded for {r}")
DEFERRED = (
    (451, "451 4.7.1 <{r}>: Recipient address rejected: Greylisted, try again in 300 seconds"),
    (450, "450 4.2.1 The user you are trying to contact is receiving mail at a rate that "
          "prevents additional messages from being delivered"),
    (421, "421 4.7.0 Try again later, closing connection"),
    (451, "451 4.3.0 Temporary lookup failure"),
    (452, "452 4.2.2 <{r}>: Mailbox temporarily over quota, try again later"),
)
OUTAGE = "451 4.4.1 connect to mx.{d}:25: Connection timed out"
MISCONFIGURED = "554 5.7.1 <{r}>: Relay access denied"
ZEN = ("554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; "
       "https://www.spamhaus.org/query/ip/{ip}")
SPAM_BLOCKLIST = (
    ZEN,
    "554 5.7.1 Service unavailable; Client host [{ip}] blocked using bl.spamcop.net; "
    "Blocked - see https://www.spamcop.net/bl.shtml?{ip}",
    "554 Service unavailable; Client host [{ip}] blocked using b.barracudacentral.org; "
    "http://www.barracudanetworks.com/reputation/?pr=1&ip={ip}",
    "550 5.7.1 Unfortunately, messages from [{ip}] weren't sent. Please contact your "
    "Internet service provider since part of their network is on our block list (S3150).",
)
# the links in a spam run are on URI blocklists
URI_BLOCKLIST = (
    "550 5.7.1 Message rejected: a URL in the message body is listed on multi.uribl.com",
    "554 5.7.1 Rejected: message contains a URI listed by multi.surbl.org",
    "554 5.7.1 Service unavailable; a domain in the message is blocked using dbl.spamhaus.org",
)
SPAM_CONTENT = (
    "550 5.7.1 Message rejected as spam by Content Filtering.",
    "550 5.7.1 [{ip}] Our system has detected that this message is likely unsolicited mail. "
    "To reduce the amount of spam sent to Gmail, this message has been blocked.",
    "554 5.7.1 Message refused: spam score too high",
)
# partners whose servers refuse the gateway's addresses on lists that name
# whole networks: nothing the sending system did
PARTNER_TEXTS = (
    "554 5.7.1 Service unavailable; Client host [{ip}] blocked using dnsbl-3.uceprotect.net; "
    "Your ISP is UCEPROTECT-Level3 listed for hosting a total of 43 abusers.",
    "550 5.7.1 Mail from IP {ip} was rejected due to listing in Barracuda Reputation Block "
    "List (BRBL)",
)
RETRIES = (300.0, 600.0, 1200.0, 2400.0)

Answer = tuple[str, int, str]  # event, code, response
Answerer = Callable[[str, str, float, int], Answer]


def text(template: str, r: str, d: str, rng: random.Random) -> str:
    return template.format(r=r, d=d, ip=rng.choice(EGRESS))


def delivered(domain: str, key: str) -> Answer:
    """A next hop's 250, in its own words, with a queue id of its own."""
    template = DELIVERED[zlib.crc32(domain.encode()) % 4]
    return "delivered", 250, template.format(q=f"{zlib.crc32(key.encode()):08X}")


class Destinations:
    """Conditions of the world's mail servers, the same for every sender."""

    def __init__(self, world_zen: set[str]):
        self.zen_users = world_zen
        self.outages: dict[str, list[tuple[float, float]]] = {}
        self.misconfigured: dict[str, list[tuple[float, float]]] = {}
        self.partners: dict[str, tuple[str, set[int] | None]] = {}  # text, refusing days
        self.listings: list[tuple[float, float]] = []  # an egress address listed, unnoticed

    def answer(self, r: str, d: str, t: float, day: int, rng: random.Random) -> Answer | None:
        """The destination's answer whoever sends, or None: up to the recipient."""
        for start, end in self.outages.get(d, ()):
            if start <= t < end:
                return "deferred", 451, OUTAGE.format(d=d)
        for start, end in self.misconfigured.get(d, ()):
            if start <= t < end:
                return "bounced", 554, MISCONFIGURED.format(r=r)
        partner = self.partners.get(d)
        if partner is not None and (partner[1] is None or day in partner[1]):
            return "bounced", 554, text(partner[0], r, d, rng)
        if self.listings and d in self.zen_users:
            for start, end in self.listings:
                if start <= t < end and rng.random() < 1 / len(EGRESS):
                    return "bounced", 554, text(ZEN, r, d, rng)
        return None


def deliver(sink: Sink, system: str, ts: float, qid: str, sender: str,
            recipients: list[tuple[str, str]], answer: Answerer, rng: random.Random,
            stats: dict[str, int] | None = None) -> None:
    """The outcome events of one accepted message: per recipient, attempts
    until delivered or bounced (at most 10); if any bounced, the gateway's
    report to the sender (a DSN: its own mail, `origin` "dsn")."""
    groups: dict[str, list[str]] = {}
    for r, d in recipients:
        groups.setdefault(d, []).append(r)
    bounced = 0.0
    for d, rs in groups.items():
        start = ts + 0.2 + min(120.0, rng.expovariate(0.8))
        for i, r in enumerate(rs):
            t = start + 0.01 * i
            for attempt in range(10):
                event, code, response = answer(r, d, t, attempt) if attempt < 9 else \
                    delivered(d, r)
                sink.add({"ts": t, "system": system, "event": event, "queue_id": qid,
                          "sender": sender, "recipient": r, "code": code,
                          "response": response})
                if stats is not None:
                    stats["attempts"] += 1
                    if event != "delivered":
                        stats[event] += 1
                if event != "deferred":
                    bounced = max(bounced, t) if event == "bounced" else bounced
                    break
                wait = RETRIES[attempt] if attempt < len(RETRIES) else 3600.0
                t += wait * rng.uniform(0.8, 1.2)
    if bounced and sender:
        dsn = sink.queue_id()
        sink.add({"ts": bounced + 0.5, "system": system, "event": "accepted", "origin": "dsn",
                  "queue_id": dsn, "sender": "", "recipients": [sender], "size": 4000})
        sink.add({"ts": bounced + 0.8, "system": system, "event": "delivered", "origin": "dsn",
                  "queue_id": dsn, "recipient": sender, "code": 250,
                  "response": delivered(sender.rpartition("@")[2], dsn)[2]})
