"""Next-hop routing against a real DNS server on loopback (no mocks of dnspython)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator

import dns.asyncresolver
import dns.nameserver
import pytest

from mailgw.config import Delivery
from mailgw.relay.routing import Hop, Route, RouteError, Router
from tests.support.dns import DNSTestServer

ZONE = """
example.test.      60 IN MX 20 mx2.example.test.
example.test.      60 IN MX 10 mx1.example.test.
mx1.example.test.  60 IN A    192.0.2.1
mx1.example.test.  60 IN AAAA 2001:db8::1
mx2.example.test.  60 IN A    192.0.2.2
equal.test.        60 IN MX 10 b.equal.test.
equal.test.        60 IN MX 10 a.equal.test.
equal.test.        60 IN MX 20 c.equal.test.
a.equal.test.      60 IN A    192.0.2.11
b.equal.test.      60 IN A    192.0.2.12
c.equal.test.      60 IN A    192.0.2.13
implicit.test.     60 IN A    192.0.2.20
implicit.test.     60 IN AAAA 2001:db8::20
v6only.test.       60 IN AAAA 2001:db8::30
bare.test.         60 IN TXT  "exists, but has no MX and no address"
nullmx.test.       60 IN MX 0 .
skip.test.         60 IN MX 5  gone.skip.test.
skip.test.         60 IN MX 10 noaddr.skip.test.
skip.test.         60 IN MX 20 ok.skip.test.
noaddr.skip.test.  60 IN TXT  "no address"
ok.skip.test.      60 IN A    192.0.2.40
dead.test.         60 IN MX 10 gone.dead.test.
dead.test.         60 IN MX 20 noaddr.dead.test.
noaddr.dead.test.  60 IN TXT  "no address"
flaky.test.        60 IN MX 10 broken.flaky.test.
flaky.test.        60 IN MX 20 gone.flaky.test.
broken.flaky.test. 60 IN A    192.0.2.50
half.test.         60 IN MX 10 broken.half.test.
half.test.         60 IN MX 20 ok.half.test.
broken.half.test.  60 IN A    192.0.2.60
ok.half.test.      60 IN A    192.0.2.61
shared.test.       60 IN MX 10 mx.shared.test.
shared.test.       60 IN MX 20 mx2.shared.test.
mx.shared.test.    60 IN A    192.0.2.70
mx2.shared.test.   60 IN A    192.0.2.70
broken.test.       60 IN MX 10 mx.broken.test.
relay.test.        60 IN MX 10 mx.relay.test.
mx.relay.test.     60 IN A    198.51.100.1
smarthost.test.    60 IN MX 10 elsewhere.test.
smarthost.test.    60 IN A    198.51.100.2
elsewhere.test.    60 IN A    192.0.2.1
"""


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DNSTestServer]:
    with DNSTestServer() as server:
        server.add(ZONE)
        for name in ("broken.test", "broken.flaky.test", "broken.half.test"):
            server.fail(name)
        yield server


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback UDP port that takes DNS queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def route(server: DNSTestServer, domain: str, **delivery: object) -> Route:
    config = Delivery.model_validate({"resolver": [f"127.0.0.1:{server.port}"], **delivery})
    return asyncio.run(Router(config, rng=random.Random(7)).route(domain))


def route_error(server: DNSTestServer, domain: str, **delivery: object) -> RouteError:
    with pytest.raises(RouteError) as info:
        route(server, domain, **delivery)
    return info.value


def hops(*spec: tuple[str, str, int]) -> tuple[Hop, ...]:
    return tuple(Hop(*s) for s in spec)


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        pytest.param("example.test", hops(("mx1.example.test", "192.0.2.1", 25),
                                          ("mx1.example.test", "2001:db8::1", 25),
                                          ("mx2.example.test", "192.0.2.2", 25)),
                     id="mx-preference-order-v4-before-v6"),
        pytest.param("implicit.test", hops(("implicit.test", "192.0.2.20", 25),
                                           ("implicit.test", "2001:db8::20", 25)),
                     id="no-mx-falls-back-to-a-and-aaaa"),
        pytest.param("v6only.test", hops(("v6only.test", "2001:db8::30", 25)),
                     id="no-mx-falls-back-to-aaaa-only"),
        pytest.param("skip.test", hops(("ok.skip.test", "192.0.2.40", 25)),
                     id="mx-targets-without-address-skipped"),
        pytest.param("half.test", hops(("ok.half.test", "192.0.2.61", 25)),
                     id="mx-target-with-servfail-skipped"),
        pytest.param("shared.test", hops(("mx.shared.test", "192.0.2.70", 25)),
                     id="address-shared-by-two-mx-tried-once"),
        pytest.param("Example.TEST.", hops(("mx1.example.test", "192.0.2.1", 25),
                                           ("mx1.example.test", "2001:db8::1", 25),
                                           ("mx2.example.test", "192.0.2.2", 25)),
                     id="domain-case-and-final-dot-ignored"),
    ],
)
def test_mx_routing_gives_hops_in_order(dns_server, domain, expected):
    result = route(dns_server, domain)
    assert result == Route(key=domain.lower().rstrip("."), hops=expected, tls_required=False)


def test_mx_hops_use_configured_delivery_port(dns_server):
    result = route(dns_server, "example.test", port=2525)
    assert {h.port for h in result.hops} == {2525}


def test_equal_preference_mx_hosts_come_before_worse_ones_in_some_order(dns_server):
    orders = set()
    config = Delivery(resolver=[f"127.0.0.1:{dns_server.port}"])
    for seed in range(20):
        result = asyncio.run(Router(config, rng=random.Random(seed)).route("equal.test"))
        names = [h.host for h in result.hops]
        assert sorted(names[:2]) == ["a.equal.test", "b.equal.test"]
        assert names[2] == "c.equal.test"
        orders.add(tuple(names))
    assert len(orders) == 2, "equal preferences should be shuffled to spread load"


@pytest.mark.parametrize(
    ("domain", "permanent", "code", "enhanced"),
    [
        pytest.param("nullmx.test", True, 556, "5.1.10", id="null-mx"),
        pytest.param("nonexistent.test", True, 550, "5.1.2", id="nxdomain"),
        pytest.param("bare.test", True, 550, "5.1.2", id="no-mx-and-no-address"),
        pytest.param("dead.test", True, 550, "5.4.4", id="every-mx-target-certainly-absent"),
        pytest.param("broken.test", False, 451, "4.4.3", id="servfail-on-mx"),
        pytest.param("flaky.test", False, 451, "4.4.3", id="mx-targets-absent-or-servfail"),
        pytest.param("a..b.test", True, 550, "5.1.2", id="invalid-domain-name"),
        pytest.param(".", True, 550, "5.1.2", id="root-is-no-domain"),
    ],
)
def test_unroutable_domains_give_reply_of_right_kind(dns_server, domain, permanent, code,
                                                     enhanced):
    error = route_error(dns_server, domain)
    assert (error.permanent, error.code, error.enhanced) == (permanent, code, enhanced)


def test_null_mx_reply_text(dns_server):
    error = route_error(dns_server, "nullmx.test")
    assert error.text == "Recipient domain has a null MX (RFC 7505): it accepts no mail"


def test_dns_timeout_is_temporary(silent_port):
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", silent_port)]
    resolver.timeout = resolver.lifetime = 0.3
    with pytest.raises(RouteError) as info:
        asyncio.run(Router(Delivery(), resolver).route("example.test"))
    assert (info.value.permanent, info.value.code, info.value.enhanced) == (False, 451, "4.4.3")


def test_bracketed_ip_route_is_used_without_dns(silent_port):
    # Any DNS query would time out against the silent port and raise RouteError.
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", silent_port)]
    resolver.timeout = resolver.lifetime = 0.3
    config = Delivery(routes={"corp.test": "[192.0.2.99]:2525", "v6.test": "[2001:db8::99]"})
    router = Router(config, resolver)
    assert asyncio.run(router.route("corp.test")) == Route(
        "192.0.2.99:2525", hops(("192.0.2.99", "192.0.2.99", 2525)), False)
    assert asyncio.run(router.route("v6.test")) == Route(
        "[2001:db8::99]:25", hops(("2001:db8::99", "2001:db8::99", 25)), False)


@pytest.mark.parametrize(
    ("next_hop", "expected"),
    [
        pytest.param("relay.test:2525", Route("relay.test:2525",
                                              hops(("mx.relay.test", "198.51.100.1", 2525)),
                                              False),
                     id="name-without-brackets-does-mx-lookup"),
        pytest.param("[smarthost.test]:587", Route("smarthost.test:587",
                                                   hops(("smarthost.test", "198.51.100.2", 587)),
                                                   False),
                     id="bracketed-name-uses-its-address-not-its-mx"),
        pytest.param("smarthost.test", Route("smarthost.test:25",
                                             hops(("elsewhere.test", "192.0.2.1", 25)),
                                             False),
                     id="unbracketed-override-follows-mx-and-uses-override-port"),
    ],
)
def test_route_override(dns_server, next_hop, expected):
    result = route(dns_server, "corp.test", routes={"corp.test": next_hop}, port=2626)
    assert result == expected


def test_relayhost_is_used_for_every_domain(dns_server):
    expected = Route("192.0.2.5:25", hops(("192.0.2.5", "192.0.2.5", 25)), False)
    for domain in ("example.test", "nonexistent.test", "nullmx.test"):
        assert route(dns_server, domain, relayhost="[192.0.2.5]") == expected


def test_route_beats_relayhost(dns_server):
    delivery = {"relayhost": "[192.0.2.5]", "routes": {"Corp.Test": "[192.0.2.6]:2525"}}
    assert route(dns_server, "CORP.test", **delivery).hops == hops(("192.0.2.6", "192.0.2.6", 2525))
    assert route(dns_server, "other.test", **delivery).hops == hops(("192.0.2.5", "192.0.2.5", 25))


@pytest.mark.parametrize(
    ("next_hop", "code", "enhanced"),
    [
        pytest.param("[missing.test]", 451, "4.3.5", id="bracketed-name-without-address"),
        pytest.param("missing.test", 451, "4.3.5", id="mx-lookup-of-missing-name"),
        pytest.param("nullmx.test", 451, "4.3.5", id="override-with-null-mx"),
        pytest.param("broken.test", 451, "4.4.3", id="override-servfail"),
    ],
)
def test_broken_override_defers_instead_of_bouncing(dns_server, next_hop, code, enhanced):
    error = route_error(dns_server, "corp.test", relayhost=next_hop)
    assert (error.permanent, error.code, error.enhanced) == (False, code, enhanced)
    assert next_hop.strip("[]") not in error.text, "replies must not name internal hosts"


@pytest.mark.parametrize(
    ("domain", "delivery", "key", "tls_required"),
    [
        pytest.param("example.test", {}, "example.test", False, id="mx"),
        pytest.param("EXAMPLE.test", {"tls_required_domains": ["example.test"]},
                     "example.test", True, id="mx-tls-required"),
        pytest.param("example.test", {"tls_required_domains": ["other.test"]},
                     "example.test", False, id="mx-other-domain-requires-tls"),
        pytest.param("example.test", {"relayhost": "[192.0.2.5]:2525"},
                     "192.0.2.5:2525", False, id="relayhost"),
        pytest.param("example.test", {"relayhost": "[192.0.2.5]:2525",
                                      "tls_required_domains": ["example.test"]},
                     "192.0.2.5:2525+tls", True, id="relayhost-tls-required-has-own-key"),
        pytest.param("example.test", {"routes": {"example.test": "relay.test:2525"}},
                     "relay.test:2525", False, id="route-with-mx-lookup"),
    ],
)
def test_route_key_and_tls_flag(dns_server, domain, delivery, key, tls_required):
    result = route(dns_server, domain, **delivery)
    assert (result.key, result.tls_required) == (key, tls_required)


def test_repeated_lookups_are_answered_from_cache():
    with DNSTestServer() as server:
        server.add("cached.test. 60 IN MX 10 mx.cached.test.\nmx.cached.test. 60 IN A 192.0.2.80")
        router = Router(Delivery(resolver=[f"127.0.0.1:{server.port}"]))

        async def twice() -> tuple[Route, Route]:
            first = await router.route("cached.test")
            server.remove("cached.test")
            server.remove("mx.cached.test")
            return first, await router.route("cached.test")

        first, second = asyncio.run(twice())
    assert first == second
    assert first.hops == hops(("mx.cached.test", "192.0.2.80", 25))


def test_route_error_carries_an_smtp_like_reply():
    error = RouteError(451, "4.4.3", "try later")
    assert (error.permanent, str(error)) == (False, "451 4.4.3 try later")
    assert RouteError(550, "5.1.2", "no").permanent
