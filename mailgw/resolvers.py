"""DNS resolvers (dnspython) at the configured addresses, each asked on its
own port: delivery's MX lookups and the DNSBL checks each make one."""

from __future__ import annotations

import dns.asyncresolver
import dns.nameserver


def make_resolver(addresses: list[tuple[str, int]]) -> dns.asyncresolver.Resolver:
    """A resolver asking `addresses` ((ip, port) each), or the system's
    resolvers if there are none."""
    if not addresses:
        return dns.asyncresolver.Resolver()
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in addresses]
    return resolver
