"""Next-hop routing: which hosts, addresses and port carry mail for a domain.

`Router.route(domain)` returns a Route whose hops are in the order to try, or
raises RouteError carrying an SMTP-like reply for the recipients of that
domain. What it guarantees:

- Precedence: `delivery.routes[domain]`, then `delivery.relayhost`, then the
  domain's MX records. Domains are compared lower-case, without a final dot.
- An override written in [brackets] is used as it is: an IP literal without
  any DNS, a name through its A/AAAA records. Without brackets its name is
  looked up like a mail domain (MX, then A/AAAA), as in Postfix.
- MX hops are in preference order (equal preferences shuffled, RFC 5321
  5.1), IPv4 before IPv6 for each host, each address once, on
  `delivery.port`. A domain without MX records is its own mail host
  (implicit MX); an MX set of only "." is a null MX (RFC 7505).
- Permanent only when DNS said for certain that there is nowhere to deliver
  (NXDOMAIN, no records, null MX); timeouts, SERVFAIL and anything unknown
  are temporary. A broken override is always temporary: the recipient's
  domain is not at fault, and a bounce would lose mail over a config slip.
- Route.key is what SMTP connections may be shared on: the domain for MX
  routing, "host:port" of the override otherwise ("+tls" appended when the
  domain requires TLS, so a link opened without verified TLS is never
  reused for mail that needs it).
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from mailgw.config import Delivery, NextHop
from mailgw.relay.replies import Reply
from mailgw.resolvers import make_resolver

log = logging.getLogger("mailgw.routing")

# Replies recorded for the recipients of a domain that cannot be routed. They go
# into DSNs to agency senders, so they name the recipient domain and never a
# configured relay host (that one is logged for the operators instead).
NULL_MX = Reply(556, "5.1.10", "Recipient domain has a null MX (RFC 7505): it accepts no mail")
NO_SUCH_DOMAIN = Reply(550, "5.1.2", "Recipient domain {domain} does not exist")
NO_MAIL_HOST = Reply(550, "5.1.2", "Recipient domain {domain} has no MX or address records")
INVALID_DOMAIN = Reply(550, "5.1.2", "Recipient domain is not a valid domain name")
MX_HOSTS_UNRESOLVABLE = Reply(550, "5.4.4", "Mail servers of {domain} have no addresses in DNS")
DNS_TEMPFAIL = Reply(451, "4.4.3", "DNS lookup for {domain} failed temporarily; will retry")
NEXT_HOP_BROKEN = Reply(
    451, "4.3.5", "The gateway's configured next hop for {domain} is unusable; mail waits"
)

DNS_TIMEOUT = 3.0  # one try at one server
DNS_LIFETIME = 10.0  # the whole lookup: a route() call holds up its message this long at most
DNS_CACHE_ENTRIES = 50_000  # bounded: hostile domains may answer with week-long TTLs
# A hostile or broken domain may list hundreds of MX hosts; each costs two
# lookups, and a relay rarely gets past the second or third host anyway.
MAX_MX_HOSTS = 10


@dataclass(frozen=True)
class Hop:
    host: str  # the name (for TLS SNI/verification and logs), or the IP if given as one
    address: str  # IP address to connect to
    port: int


@dataclass(frozen=True)
class Route:
    key: str
    hops: tuple[Hop, ...]
    tls_required: bool


class RouteError(Exception):
    """Mail for a domain cannot be routed now (temporary) or ever (permanent)."""

    def __init__(self, code: int, enhanced: str, text: str):
        super().__init__(f"{code} {enhanced} {text}")
        self.code = code
        self.enhanced = enhanced
        self.text = text

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @classmethod
    def of(cls, reply: Reply, **values: object) -> RouteError:
        return cls(reply.code, reply.enhanced, reply.text.format(**values))


class _Miss(enum.Enum):
    """Why a lookup found nothing; only ABSENT and NODATA are certain."""

    ABSENT = "NXDOMAIN"
    NODATA = "no records"
    TEMPORARY = "temporary DNS failure"
    NULL_MX = "null MX"
    INVALID = "invalid name"


class _Unroutable(Exception):
    def __init__(self, miss: _Miss, mx_hosts: bool = False):
        super().__init__(miss.value)
        self.miss = miss
        self.mx_hosts = mx_hosts  # the MX records were fine; their hosts had no address


def _canonical(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class Router:
    def __init__(
        self,
        config: Delivery,
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        rng: random.Random | None = None,
    ):
        self._config = config
        self._resolver = resolver if resolver is not None else _make_resolver(config)
        self._rng = rng or random.Random()
        self._tls_required = frozenset(config.tls_required_domains)

    async def route(self, domain: str) -> Route:
        domain = _canonical(domain)
        tls = domain in self._tls_required
        override = self._config.routes.get(domain) or self._config.relayhost
        try:
            if override is None:
                hops = await self._mx_hops(domain, self._config.port)
                return Route(domain, tuple(hops), tls)
            hops = await self._override_hops(override)
        except _Unroutable as e:
            raise self._error(domain, override, e) from None
        key = f"[{override.host}]" if ":" in override.host else override.host
        key = f"{key}:{override.port}" + ("+tls" if tls else "")
        return Route(key, tuple(hops), tls)

    def _error(self, domain: str, override: NextHop | None, e: _Unroutable) -> RouteError:
        if override is not None:
            # the operators must fix this, and the recipients must not pay for it
            log.warning("next hop %s:%d for %s is unusable: %s",
                        override.host, override.port, domain, e.miss.value)
            reply = DNS_TEMPFAIL if e.miss is _Miss.TEMPORARY else NEXT_HOP_BROKEN
            return RouteError.of(reply, domain=domain)
        log.info("cannot route %s: %s", domain, e.miss.value)
        if e.miss is _Miss.TEMPORARY:
            reply = DNS_TEMPFAIL
        elif e.miss is _Miss.NULL_MX:
            reply = NULL_MX
        elif e.miss is _Miss.INVALID:
            reply = INVALID_DOMAIN
        elif e.mx_hosts:
            reply = MX_HOSTS_UNRESOLVABLE
        elif e.miss is _Miss.ABSENT:
            reply = NO_SUCH_DOMAIN
        else:
            reply = NO_MAIL_HOST
        return RouteError.of(reply, domain=domain)

    async def _override_hops(self, hop: NextHop) -> list[Hop]:
        try:
            # An MX lookup of an address is never what was meant, brackets or not.
            literal = ipaddress.ip_address(hop.host)
        except ValueError:
            pass
        else:
            return [Hop(str(literal), str(literal), hop.port)]
        if hop.mx_lookup:
            return await self._mx_hops(hop.host, hop.port)
        addresses, miss = await self._addresses(_name(hop.host))
        if not addresses:
            raise _Unroutable(miss or _Miss.NODATA)
        return [Hop(hop.host, a, hop.port) for a in addresses]

    async def _mx_hops(self, domain: str, port: int) -> list[Hop]:
        name = _name(domain)
        records, miss = await self._query(name, "MX")
        if miss is _Miss.NODATA:
            # RFC 5321 5.1: no MX records, so the domain is its own mail host
            addresses, miss = await self._addresses(name)
            if not addresses:
                raise _Unroutable(miss or _Miss.NODATA)
            return [Hop(domain, a, port) for a in addresses]
        if miss is not None:
            raise _Unroutable(miss)
        targets = [r for r in records if r.exchange != dns.name.root]
        if not targets:
            raise _Unroutable(_Miss.NULL_MX)
        exchanges = self._by_preference(targets)[:MAX_MX_HOSTS]
        found = await asyncio.gather(*(self._addresses(x) for x in exchanges))
        hops: list[Hop] = []
        seen: set[str] = set()
        misses: list[_Miss] = []
        for exchange, (addresses, host_miss) in zip(exchanges, found, strict=True):
            if not addresses:
                log.info("MX host %s of %s skipped: %s", exchange, domain,
                         (host_miss or _Miss.NODATA).value)
                misses.append(host_miss or _Miss.NODATA)
            for address in addresses:
                if address not in seen:
                    seen.add(address)
                    hops.append(Hop(_host_text(exchange), address, port))
        if not hops:
            # bounce only when DNS was sure about every host; one timeout may hide an address
            certain = all(m in (_Miss.ABSENT, _Miss.NODATA) for m in misses)
            raise _Unroutable(_Miss.NODATA if certain else _Miss.TEMPORARY, mx_hosts=True)
        return hops

    def _by_preference(self, records: Sequence[Any]) -> list[dns.name.Name]:
        groups: dict[int, list[dns.name.Name]] = {}
        listed: set[dns.name.Name] = set()
        for r in sorted(records, key=lambda r: (r.preference, r.exchange)):
            if r.exchange not in listed:  # a host listed twice is tried at its best preference
                listed.add(r.exchange)
                groups.setdefault(r.preference, []).append(r.exchange)
        ordered: list[dns.name.Name] = []
        for preference in sorted(groups):
            group = groups[preference]
            self._rng.shuffle(group)  # spread load over equal MX hosts (RFC 5321 5.1)
            ordered.extend(group)
        return ordered

    async def _addresses(self, name: dns.name.Name) -> tuple[list[str], _Miss | None]:
        """IPv4 first, then IPv6: the gateway's egress reputation is watched on v4."""
        (v4, miss4), (v6, miss6) = await asyncio.gather(
            self._query(name, "A"), self._query(name, "AAAA")
        )
        addresses = [r.address for r in (*v4, *v6)]
        if addresses:
            return addresses, None
        if _Miss.TEMPORARY in (miss4, miss6):
            return [], _Miss.TEMPORARY
        return [], miss4 or miss6

    async def _query(self, name: dns.name.Name, rdtype: str) -> tuple[list[Any], _Miss | None]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            return [], _Miss.ABSENT
        except dns.resolver.NoAnswer:
            return [], _Miss.NODATA
        except (dns.exception.DNSException, OSError) as e:
            # SERVFAIL (NoNameservers), timeouts, unreachable resolvers: all retried later
            log.info("DNS %s lookup of %s failed: %s: %s", rdtype, name, type(e).__name__, e)
            return [], _Miss.TEMPORARY
        return list(answer), None


def _name(text: str) -> dns.name.Name:
    try:
        name = dns.name.from_text(text)  # absolute: no search list is ever appended
    except dns.exception.DNSException:
        raise _Unroutable(_Miss.INVALID) from None
    if name == dns.name.root:  # "" and "." parse as the root, which is no mail domain
        raise _Unroutable(_Miss.INVALID)
    return name


def _make_resolver(config: Delivery) -> dns.asyncresolver.Resolver:
    resolver = make_resolver(config.resolver_addresses())
    resolver.timeout = DNS_TIMEOUT
    resolver.lifetime = DNS_LIFETIME
    # EDNS with a 1232-byte payload: big MX sets fit in one UDP answer without fragmenting
    resolver.use_edns(0, 0, 1232)
    resolver.cache = dns.resolver.LRUCache(max_size=DNS_CACHE_ENTRIES)
    return resolver
