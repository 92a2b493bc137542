"""Line discipline at the exact limits: NUL in message data (smuggling aimed
at a next hop that drops NUL), text lines of 998 characters and one more,
command lines of 512 octets and longer. Real sockets, a real gateway, a real
destination."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.client import RawClient
from tests.support.destination import Destination
from tests.support.gateway import GatewayThread
from tests.support.waiting import wait_until

HEAD = b"From: a@mfa.gov.kz\r\nTo: x@example.com\r\nSubject: lines\r\n\r\n"
SECOND = b"MAIL FROM:<a@mfa.gov.kz>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n"


def session(port: int) -> RawClient:
    c = RawClient(port)
    assert c.cmd("EHLO mail.mfa.gov.kz").startswith("250")
    return c


def transaction(c: RawClient) -> None:
    assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
    assert c.cmd("RCPT TO:<x@example.com>").startswith("250")
    assert c.cmd("DATA").startswith("354")


def events(gw: GatewayThread, kind: str) -> list[dict]:
    lines = gw.gateway.config.gateway.event_log.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def spooled(gw: GatewayThread) -> list[str]:
    """Files in the spool's state directories (queue/, active/, ...)."""
    return [p.name for p in gw.gateway.config.gateway.spool_dir.glob("*/*")]


@pytest.fixture
def nul_blind() -> Iterator[Destination]:
    with Destination(drops_nul=True) as d:
        yield d


@pytest.fixture
def gw(make_config, nul_blind) -> Iterator[GatewayThread]:
    with GatewayThread(make_config(
            delivery={"relayhost": f"[127.0.0.1]:{nul_blind.port}"})) as g:
        yield g


@pytest.mark.parametrize("body", [
    b"hi\r\n\x00.\r\n" + SECOND,  # to a hop that drops NUL: an end line, then a second message
    b"hi\r\n.\x00\r\n" + SECOND,
    b"hi\r\n\x00.\r\nRSET\r\n" + SECOND,
    b"a NUL\x00inside a line\r\n",
    b"last line\x00\r\n",  # right before the end line
    b"last line\r\n\x00\r\n",
], ids=["nul-dot-then-second-message", "dot-nul-then-second-message", "nul-dot-rset-second",
        "inside-a-line", "end-of-last-line", "alone-before-end"])
def test_nul_in_data_is_refused_and_nothing_reaches_a_hop_that_drops_nul(gw, nul_blind, body):
    with session(gw.port) as c:
        transaction(c)
        reply = c.cmd(HEAD + body + b".\r\n")
        assert reply.startswith("550 5.6.2"), reply
        assert spooled(gw) == []
        # the session goes on; once this clean message is at the destination,
        # anything else the gateway had taken would be there too
        transaction(c)
        queued = c.cmd(HEAD + b"clean\r\n.\r\n")
    assert queued.startswith("250 2.0.0"), queued
    wait_until(lambda: queued.split()[-1] in nul_blind.received_ids(), what="the clean message")
    assert nul_blind.commands == ["MAIL a@mfa.gov.kz"]
    assert [m.rcpt_tos for m in nul_blind.messages] == [["x@example.com"]]
    (rejected,) = events(gw, "rejected")
    assert (rejected["reason"], rejected["code"]) == ("nul_in_data", 550)
    assert len(events(gw, "accepted")) == 1


@pytest.mark.parametrize("body", [
    b"tab\there, form feed\x0c, bell\x07, escape\x1b, DEL\x7f\r\n",
])
def test_other_control_characters_in_a_body_are_relayed(gateway, dest, body):
    with session(gateway.port) as c:
        transaction(c)
        reply = c.cmd(HEAD + body + b".\r\n")
    assert reply.startswith("250 2.0.0"), reply
    wait_until(lambda: reply.split()[-1] in dest.received_ids())
    assert dest.messages[0].data.endswith(HEAD + body)


LIMIT = 998  # limits.max_line_length by default: 1000 octets with CRLF


@pytest.mark.parametrize("wire,arrives", [
    (b"y" * LIMIT, b"y" * LIMIT),
    (b"y" * (LIMIT + 1), None),
    (b"y" * (LIMIT + 2), None),
    (b"y" * (LIMIT + 3), None),
    (b"." * 2 + b"y" * (LIMIT - 1), b"." + b"y" * (LIMIT - 1)),  # stuffed: one octet more
    (b"." * 2 + b"y" * LIMIT, None),
], ids=["998", "999", "1000", "1001", "999-stuffed", "1000-stuffed"])
def test_a_text_line_is_at_most_1000_octets_with_crlf(gateway, dest, wire, arrives):
    with session(gateway.port) as c:
        transaction(c)
        reply = c.cmd(HEAD + wire + b"\r\nafter\r\n.\r\n")
        assert c.cmd("NOOP").startswith("250")
    if arrives is None:
        assert reply == "500 5.5.2 Line too long"
        assert events(gateway, "rejected")[-1]["reason"] == "line_too_long"
        assert spooled(gateway) == []
        return
    assert reply.startswith("250 2.0.0"), reply
    wait_until(lambda: reply.split()[-1] in dest.received_ids())
    assert dest.messages[0].data.endswith(HEAD + arrives + b"\r\nafter\r\n")


def noop(octets: int) -> bytes:
    """A NOOP command line of exactly `octets` octets, CRLF included."""
    return b"NOOP " + b"x" * (octets - 7) + b"\r\n"


def test_a_command_line_of_512_octets_is_taken(gateway):
    with session(gateway.port) as c:
        assert c.cmd(noop(512)).startswith("250")


@pytest.mark.parametrize("octets", [513, 1000, 1001, 1002, 1003, 5000, 70000])
def test_a_longer_command_line_is_refused_as_too_long_and_the_session_goes_on(gateway, octets):
    with session(gateway.port) as c:
        assert c.cmd(noop(octets)) == "500 5.5.2 Line too long"
        assert c.cmd("NOOP") == "250 OK"  # in step: nothing of the long line is left over
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
    assert events(gateway, "rejected")[-1]["reason"] == "line_too_long"


def mail(octets: int) -> bytes:
    """A MAIL command line of exactly `octets` octets, CRLF included."""
    return b"MAIL FROM:<a@mfa.gov.kz>" + b" " * (octets - 34) + b"SIZE=100\r\n"


def test_mail_may_be_26_octets_longer_for_size_and_no_ehlo_raises_that(gateway):
    # RFC 1870; aiosmtpd added the 26 octets at every EHLO, to a table all
    # sessions share
    with session(gateway.port) as c, session(gateway.port) as other:
        assert other.cmd("EHLO again.mfa.gov.kz").startswith("250")
        assert c.cmd("EHLO again.mfa.gov.kz").startswith("250")
        assert c.cmd(mail(539)) == "500 5.5.2 Line too long"
        assert c.cmd(mail(538)).startswith("250")
