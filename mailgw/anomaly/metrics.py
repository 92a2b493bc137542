"""Every metric a rule can read, named once: the events that move it, how
its windows count it, and what one event adds to it. Nothing else lists
metrics: the engine's tallies, the windows backends (in process and Redis)
and the config's check of a rule's `metric` and `per` derive from
`METRICS`, so a new metric is one entry here. An Engine may be given a
table of its own.

A metric is summed (each event adds a number: a constant, or one the event
gives) or counted per key (each event counts some keys: recipient domains,
addresses), a per-key window reading as its distinct keys, as the count
of its most frequent one, or as the counts of its FEW most frequent
summed; or it counts the keys the system never sent to
before ("novel": its windows count the events that bring at least one
such key, the system's memory of the keys it has seen being windows.Seen).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from mailgw.anomaly.tally import Window

Event = dict[str, Any]
Amount = Callable[[Event], float]
Keys = Callable[[Event], tuple[str, ...]]


@dataclass(frozen=True)
class Metric:
    events: frozenset[str]  # the kinds of event that move it
    # "sum"; per key: "distinct" (how many keys), "top" (the top key's
    # count), "few" (the FEW top keys' counts summed) or "novel" (events
    # with a key never seen before: a summed window)
    how: str
    adds: float | Amount = 1.0  # summed: what one event adds, the same for all or its own
    keys: Keys | None = None  # per key: the keys one event counts
    # per key: the metric whose windows it reads, counting the same keys
    # (one count of them, read two ways); None: its own
    reads: str | None = None

    def counter(self, name: str) -> str:
        """The name its windows are counted under (a metric's named `name`)."""
        return self.reads or name


def summed(*events: str, adds: float | Amount = 1.0) -> Metric:
    return Metric(frozenset(events), "sum", adds if callable(adds) else float(adds))


def per_key(*events: str, keys: Keys, read: Literal["distinct", "top", "few", "novel"],
            of: str | None = None) -> Metric:
    """`of`: the metric whose windows it reads (the same keys, read as `read`)."""
    return Metric(frozenset(events), read, keys=keys, reads=of)


# how many of a window's busiest keys a "few" reading sums: a loop between
# a mailbox and a handful of addresses (forwards and replies among them)
FEW = 3


def summed_windows(how: str) -> bool:
    """Whether a metric's windows hold a running sum (else keys)."""
    return how in ("sum", "novel")


class Counted(NamedTuple):
    """How a backend keeps one of an engine's windows."""
    how: str  # "sum" (also a novel metric's), else how its keys are read
    counter: tuple[str, float]  # whose count it is: (metric, seconds), shared by Metric.reads
    few: bool  # its keys' count keeps its FEW busiest keys (a window reads it "few")


def kept(windows: Sequence[Window], metrics: Mapping[str, Metric]) -> list[Counted]:
    """Each window of `windows` as a backend keeps it, by index."""
    hows = ["sum" if summed_windows(metrics[m].how) else metrics[m].how for m, _ in windows]
    counters = [(metrics[m].counter(m), seconds) for m, seconds in windows]
    few = {c for c, how in zip(counters, hows, strict=True) if how == "few"}
    return [Counted(how, c, c in few) for c, how in zip(counters, hows, strict=True)]


# a remote refusal that names a blocklist: the message (or its sender) looks
# like spam to the world, the surest sign that a system is a danger to the
# gateway's addresses; "listed" alone would also match "user not listed".
# Searched in the lower-cased reply: twice as fast as IGNORECASE
BLOCKLIST = re.compile(
    r"blocked using|(?<!not )listed (?:in|on|at|by)"
    r"|\b(?:dnsbl|rbl|block ?list(?:ed)?|black ?list(?:ed)?|spamhaus|spamcop"
    r"|barracuda(?:central)?|sorbs|uceprotect|psbl|surbl|uribl)\b")


def recipient_count(event: Event) -> float:
    return float(len(event.get("recipients") or ()))


def size(event: Event) -> float:
    return float(event.get("size", 0))


def names_a_blocklist(event: Event) -> float:
    return 1.0 if BLOCKLIST.search(str(event.get("response", "")).lower()) is not None else 0.0


def recipient_domains(event: Event) -> tuple[str, ...]:
    return tuple(r.rpartition("@")[2].lower() for r in event.get("recipients") or ())


def recipient_addresses(event: Event) -> tuple[str, ...]:
    return tuple(r.lower() for r in event.get("recipients") or ())


def login_client(event: Event) -> tuple[str, ...]:
    """The client address of mail sent after SMTP AUTH (none without)."""
    client = event.get("client")
    return (str(client),) if client and event.get("auth") else ()


def auth_failed(event: Event) -> float:
    return 1.0 if event.get("reason") == "auth_failed" else 0.0


def sender_to_recipient(event: Event) -> tuple[str, ...]:
    sender = str(event.get("sender", "")).lower()
    return tuple(f"{sender} {r.lower()}" for r in event.get("recipients") or ())


# refusals that say nothing of what the system does: its own suspension (a
# sender's restriction), and the gateway's trouble (a fault, a full disk, a
# stop, its connection caps)
NOT_THE_SYSTEMS = frozenset({"suspended", "restricted", "internal_error", "store_failed",
                             "disk_low", "shutting_down", "too_many_connections"})

METRICS: dict[str, Metric] = {
    "messages": summed("accepted"),
    "recipients": summed("accepted", adds=recipient_count),
    "bytes": summed("accepted", adds=size),
    "attempts": summed("delivered", "bounced", "deferred"),  # delivery attempts
    "perm_failures": summed("bounced"),
    "deferrals": summed("deferred"),
    "blocklist_rejections": summed("bounced", "deferred", adds=names_a_blocklist),
    "rejections": summed("rejected"),  # the gateway's refusals
    "recipient_domains": per_key("accepted", keys=recipient_domains, read="distinct"),
    "top_recipient": per_key("accepted", keys=recipient_addresses, read="top"),
    # messages from one mailbox to one address: a mail loop (a forwarding rule
    # and an autoresponder) repeats one pair; a rush of reports to one
    # address, or a backlog flushed, comes from many mailboxes
    "top_pair": per_key("accepted", keys=sender_to_recipient, read="top"),
    # the same, to a few addresses: a loop among a handful of addresses
    # stays under one pair's line with each, but not with all of them
    "top_few_pairs": per_key("accepted", keys=sender_to_recipient, read="few", of="top_pair"),
    # messages to a domain the system never mailed before: spam to a harvested
    # list reaches a new domain with most messages, a system's own mail
    # rarely; a circular to 300 addresses is one message, however many new
    "to_new_domains": per_key("accepted", keys=recipient_domains, read="novel"),
    # the addresses a login's mail came from: a person's devices are a
    # handful in an hour, a stolen password used by many machines is not
    "login_clients": per_key("accepted", keys=login_client, read="distinct"),
    # SMTP AUTH refused for one of the system's logins: a password guessed
    "auth_failures": summed("rejected", adds=auth_failed),
}

# the metric of each system's 24-hour history (the status page's chart)
HISTORY = "messages"
