"""Watching the egress addresses on DNSBLs (dnspython, asynchronous).

Every address is looked up in every zone on a schedule and on demand
(`mailgw dnsbl`): `4.3.2.1.zone A` answers 127.0.0.x when 1.2.3.4 is listed,
NXDOMAIN when it is not; the TXT record says why. A change (listed,
delisted) is a transition in the state store, which exactly one gateway wins
(so one alert goes out), an audit entry and an event; the egress picks its
addresses accordingly. A lookup that fails (timeout, a list refusing the
resolver) changes nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver

from mailgw.blocklist_guard.egress import Egress
from mailgw.blocklist_guard.notices import Notifier
from mailgw.clock import Clock, utc_time
from mailgw.events import EventSink
from mailgw.resolvers import make_resolver
from mailgw.state.access import StoreAccess, Unavailable

log = logging.getLogger("mailgw.dnsbl")


@dataclass(frozen=True)
class Check:
    address: str
    zone: str
    listed: bool | None  # None: the lookup failed
    reason: str = ""


def query_name(address: str, zone: str) -> str:
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        labels = reversed(address.split("."))
    else:  # nibbles, as for ip6.arpa
        labels = reversed(ip.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone


def dnsbl_resolver(nameservers: list[tuple[str, int]],
                   timeout: float) -> dns.asyncresolver.Resolver:
    resolver = make_resolver(nameservers)
    resolver.lifetime = timeout
    return resolver


async def check(resolver: dns.asyncresolver.Resolver, address: str, zone: str) -> Check:
    name = query_name(address, zone)
    try:
        answer = await resolver.resolve(name, "A")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return Check(address, zone, False)
    except dns.exception.DNSException as e:
        return Check(address, zone, None, f"lookup failed: {e}")
    codes = [r.address for r in answer]
    # 127.255.255.x: the list refuses to answer this resolver; not a listing
    if not codes or any(not c.startswith("127.") or c.startswith("127.255.255.")
                        for c in codes):
        return Check(address, zone, None, f"not a listing answer: {', '.join(codes)}")
    try:
        txt = await resolver.resolve(name, "TXT")
        reason = " ".join(b.decode("utf-8", "replace") for r in txt for b in r.strings)
    except dns.exception.DNSException:
        reason = ""
    return Check(address, zone, True, reason or f"listed ({', '.join(codes)})")


async def check_every(resolver: dns.asyncresolver.Resolver, addresses: list[str],
                      zones: list[str]) -> list[Check]:
    """Every address on every zone, looked up at once."""
    return await asyncio.gather(*(check(resolver, a, z) for a in addresses for z in zones))


class DnsblWatch:
    def __init__(self, *, addresses: list[str], zones: list[str],
                 resolver: dns.asyncresolver.Resolver, store: StoreAccess, egress: Egress,
                 events: EventSink, clock: Clock, notifier: Notifier,
                 run_io: Callable[..., Awaitable[Any]]):
        """`run_io(fn, *args)`: `fn` off the event loop; `notifier`: the
        operators' alert on a listing."""
        self.addresses, self.zones, self.resolver = addresses, zones, resolver
        self.store, self.egress, self.events, self.clock = store, egress, events, clock
        self.notifier, self.run_io = notifier, run_io

    async def load(self) -> None:
        """What the store knows of listings: the egress avoids them from the start."""
        try:
            listings = await self.store("read DNSBL listings", self.store.store.dnsbl_listings)
        except Unavailable:
            return
        self.egress.listed = {entry["address"] for entry in listings if entry["listed"]}

    async def check_all(self) -> list[Check]:
        checks = await check_every(self.resolver, self.addresses, self.zones)
        for c in checks:
            if c.listed is None:
                log.warning("DNSBL %s for %s: %s", c.zone, c.address, c.reason)
        listed = {c.address for c in checks if c.listed}
        unknown = {c.address for c in checks if c.listed is None}
        # a failed lookup keeps what was known
        self.egress.listed = listed | (self.egress.listed & unknown)
        now = self.clock.now()
        for c in checks:
            if c.listed is not None and await self.store(
                    "record a DNSBL transition", self.store.store.dnsbl_transition, c.address,
                    c.zone, c.listed, c.reason, now):
                await self._changed(c)
        return checks

    async def _changed(self, c: Check) -> None:
        """A transition this gateway won: log it, and alert on a listing."""
        event = "dnsbl_listed" if c.listed else "dnsbl_delisted"
        self.events.emit(event, None, address=c.address, zone=c.zone, reason=c.reason)
        if not c.listed:
            log.warning("%s is no longer listed on %s", c.address, c.zone)
            return
        everywhere = set(self.addresses) <= self.egress.listed
        log.error("%s is listed on %s: %s%s", c.address, c.zone, c.reason,
                  "; every egress address is listed, delivery goes on from all of them"
                  if everywhere else "; delivery leaves it out")
        await self.run_io(self.notifier.alert, "dnsbl_listed", {
            "address": c.address, "zone": c.zone, "reason": c.reason,
            "since": utc_time(self.clock.now()), "top": self.egress.top_senders(c.address),
            "everywhere": everywhere, "usable": self.egress.usable()})

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.check_all()
            except Unavailable:
                pass  # the state store is away: told once; the listings next time
            except Exception:
                log.exception("DNSBL check failed")
            await asyncio.sleep(interval)
