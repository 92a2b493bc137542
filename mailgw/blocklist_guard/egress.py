"""The gateway's egress addresses: which one the next outgoing connection
comes from (in turn, leaving out any listed on a DNSBL; every one if all are
listed, since mail must still flow), and which systems' mail went out from
each, for the operators' alert when one gets listed."""

from __future__ import annotations

import itertools
from collections import Counter

from mailgw.clock import Clock
from mailgw.events import Event

USAGE_HOURS = 24  # how far back the usage of an address is kept


class Egress:
    def __init__(self, addresses: list[str], clock: Clock):
        self.addresses = addresses
        self.clock = clock
        self.listed: set[str] = set()
        self._turn = itertools.count()
        # hour -> address -> system -> deliveries attempted from it
        self._usage: dict[int, dict[str, Counter[str]]] = {}

    def usable(self) -> list[str]:
        clean = [a for a in self.addresses if a not in self.listed]
        return clean or self.addresses

    def pick(self) -> str | None:
        """The source address of the next connection; None: the system's choice."""
        usable = self.usable()
        return usable[next(self._turn) % len(usable)] if usable else None

    def count(self, event: Event) -> None:
        """A subscriber of the event bus: delivery outcomes name the address
        they went out from."""
        source, system = event.get("source"), event["system"]
        if source is None or system is None or event.get("origin", "system") != "system":
            return
        hour = int(event["ts"] // 3600)
        by_address = self._usage.get(hour)
        if by_address is None:  # a new hour: the oldest leave
            for old in [h for h in self._usage if h <= hour - USAGE_HOURS]:
                del self._usage[old]
            by_address = self._usage[hour] = {}
        by_address.setdefault(source, Counter())[system] += 1

    def top_senders(self, address: str, hours: int = 6, n: int = 5) -> list[tuple[str, int]]:
        """The systems whose mail went out from `address` most in the last
        `hours` hours, with their counts: the likely cause of a listing."""
        now = int(self.clock.now() // 3600)
        total: Counter[str] = Counter()
        for hour, by_address in self._usage.items():
            if hour > now - hours:
                total.update(by_address.get(address, Counter()))
        return total.most_common(n)
