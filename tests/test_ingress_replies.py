"""Every row of DESIGN.md's reply table, and the bad inputs, as SMTP dialogues
against the running gateway (relaying to a real destination)."""

from __future__ import annotations

import json
import shutil
import smtplib

import pytest

from tests.support.client import RawClient
from tests.support.gateway import GatewayThread
from tests.support.waiting import wait_until

MSG = b"From: a@mfa.gov.kz\r\nTo: x@example.com\r\nSubject: t\r\n\r\nbody\r\n"


def events(config, kind=None):
    path = config.gateway.event_log
    if not path.exists():
        return []
    out = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in out if kind is None or e["event"] == kind]


def session(port, source=None):
    c = RawClient(port, source=source)
    assert c.greeting.startswith("220 ")
    assert c.cmd("EHLO mail.mfa.gov.kz").startswith("250")
    return c


def send_data(c, body: bytes) -> str:
    assert c.cmd("DATA").startswith("354")
    return c.cmd(body + b".\r\n")


def test_accepted_message_gets_250_with_queue_id_and_reaches_destination(gateway, dest):
    with session(gateway.port) as c:
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
        assert c.cmd("RCPT TO:<x@example.com>").startswith("250")
        reply = send_data(c, MSG)
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    queue_id = reply.split()[-1]
    wait_until(lambda: queue_id in dest.received_ids())
    assert events(gateway.gateway.config, "accepted")[0]["queue_id"] == queue_id


def test_client_outside_networks_and_not_authenticated_is_denied_at_rcpt(gateway, dest):
    with session(gateway.port, source="127.0.0.2") as c:
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
        assert c.cmd("RCPT TO:<x@example.com>").startswith("550 5.7.1 Relaying denied")
        assert c.cmd("DATA").startswith("503 5.5.1")
    rejected = events(gateway.gateway.config, "rejected")
    assert [(e["reason"], e["system"]) for e in rejected] == [
        ("relay_denied", None), ("bad_sequence", None)]


@pytest.mark.parametrize("sender", [
    "a@example.com",
    "a@mfa.gov.kz.evil.com",
    "@mfa.gov.kz:a@evil.com",  # source route: the final domain counts
])
def test_sender_outside_system_domains_is_refused_at_mail(gateway, sender):
    with session(gateway.port) as c:
        reply = c.cmd(f"MAIL FROM:<{sender}>")
    assert reply.startswith("550 5.7.1 Sender domain"), reply
    assert "mfa" in reply
    assert events(gateway.gateway.config, "rejected")[-1]["reason"] == "sender_domain"


@pytest.mark.parametrize("recipient,why", [
    ("user%evil.com@example.com", "routing characters"),
    ("evil.com!user@example.com", "routing characters"),
    ('"user@evil.com"@example.com', "routing characters"),
    ('"user%evil.com"@example.com', "routing characters"),
    ("user@[192.0.2.1]", "address literals"),
    ("user@localhost", "invalid domain"),
])
def test_open_relay_address_forms_are_refused(gateway, dest, recipient, why):
    with session(gateway.port) as c:
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
        reply = c.cmd(f"RCPT TO:<{recipient}>")
    assert reply.startswith("553 5.1.3") and why in reply, reply


def test_source_routed_recipient_is_relayed_to_its_final_domain_only(gateway, dest):
    with session(gateway.port) as c:
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
        assert c.cmd("RCPT TO:<@relay.example:x@example.com>").startswith("250")
        assert send_data(c, MSG).startswith("250")
    wait_until(lambda: dest.messages)
    assert dest.messages[0].rcpt_tos == ["x@example.com"]


def test_recipients_beyond_the_cap_get_452(gateway):
    cap = gateway.gateway.config.limits.max_recipients
    with session(gateway.port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        for i in range(cap):
            assert c.cmd(f"RCPT TO:<u{i}@example.com>").startswith("250")
        assert c.cmd("RCPT TO:<one-more@example.com>").startswith("452 4.5.3")


def test_message_over_size_limit_gets_552_both_declared_and_sent(make_config, dest):
    cfg = make_config(limits={"max_message_size": 4096},
                      delivery={"relayhost": f"[127.0.0.1]:{dest.port}"})
    with GatewayThread(cfg) as gw, session(gw.port) as c:
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz> SIZE=5000").startswith("552 5.3.4")
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
        assert c.cmd("RCPT TO:<x@example.com>").startswith("250")
        assert send_data(c, MSG + (b"x" * 70 + b"\r\n") * 100).startswith("552 5.3.4")
        # the session goes on: a small message still passes
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        assert send_data(c, MSG).startswith("250")
    wait_until(lambda: len(dest.messages) == 1)


@pytest.mark.parametrize("raw,expected", [
    (b"MAIL FROM:<a@mfa.gov.kz>\n", "500 5.5.2"),          # bare LF
    (b"MAIL FROM:<a@mfa.gov.kz>\rX\r\n", "500 5.5.2"),     # bare CR
    (b"MAIL FROM:<a\x00@mfa.gov.kz>\r\n", "501 5.5.2"),    # NUL
    (b"MAIL FROM:<a\x1b@mfa.gov.kz>\r\n", "501 5.5.2"),    # ESC
    (b"NOOP \x07\r\n", "501 5.5.2"),
])
def test_bad_bytes_in_commands_are_refused(gateway, raw, expected):
    with session(gateway.port) as c:
        assert c.cmd(raw).startswith(expected)
        # nothing was taken as a sender: RCPT still needs MAIL
        assert c.cmd("RCPT TO:<x@example.com>").startswith("503")


def test_non_ascii_address_is_refused_with_an_enhanced_code(gateway):
    with session(gateway.port) as c:
        assert c.cmd("MAIL FROM:<клерк@mfa.gov.kz>".encode() + b"\r\n").startswith("553 5.6.7")
        assert c.cmd("RCPT TO:<x@example.com>").startswith("503")


def test_ipv6_listener_and_client_network(make_config, dest):
    cfg = make_config(gateway={"listen": ["[::1]:0"]},
                      delivery={"relayhost": f"[127.0.0.1]:{dest.port}"})
    with GatewayThread(cfg) as gw, RawClient(gw.port, host="::1") as c:
        c.cmd("EHLO mail.mfa.gov.kz")
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        assert c.cmd("RCPT TO:<x@example.com>").startswith("250")
        assert send_data(c, MSG).startswith("250 2.0.0")
    wait_until(lambda: dest.messages)


@pytest.mark.parametrize("helo", [b"EHLO a\x00b\r\n", b"HELO bad host!\r\n", b"EHLO <x>\r\n"])
def test_bad_helo_is_refused(gateway, helo):
    with RawClient(gateway.port) as c:
        assert c.cmd(helo)[:3] in ("501", "500")
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("503")  # still no HELO


@pytest.mark.parametrize("body", [
    b"Subject: x\r\n\r\nline\nmore\r\n",  # bare LF
    b"Subject: x\r\n\r\nline\rmore\r\n",  # bare CR
    # the classic smuggling payload: an end of data with a bare LF, then a second message
    b"Subject: x\r\n\r\nhi\r\n\n.\r\nMAIL FROM:<a@mfa.gov.kz>\r\nRCPT TO:<victim@example.com>\r\n"
    b"DATA\r\nsmuggled\r\n",
])
def test_bare_cr_or_lf_in_data_is_refused_and_nothing_is_relayed(gateway, dest, body):
    with session(gateway.port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        reply = send_data(c, body)
        assert reply.startswith("550 5.6.2"), reply
        assert c.cmd("NOOP").startswith("250")
    assert events(gateway.gateway.config, "accepted") == []
    assert events(gateway.gateway.config, "rejected")[-1]["reason"] == "bare_line_ending"
    assert dest.messages == []


def test_overlong_command_and_data_lines_are_refused(gateway, dest):
    with session(gateway.port) as c:
        assert c.cmd("NOOP " + "x" * 2000).startswith("500 5.5.2")
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        assert send_data(c, b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n").startswith("500 5.5.2")
    assert dest.messages == []


def test_low_free_disk_answers_452_at_mail(make_config, dest):
    cfg = make_config(limits={"min_free_disk": "1000000GiB"})
    with GatewayThread(cfg) as gw, session(gw.port) as c:
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("452 4.3.1")


def test_failed_spool_write_answers_451_never_250(gateway, dest):
    spool = gateway.gateway.config.gateway.spool_dir
    shutil.rmtree(spool / "tmp")
    (spool / "tmp").write_text("not a directory")  # every write in it now fails
    with session(gateway.port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        assert send_data(c, MSG).startswith("451 4.3.0")
    assert events(gateway.gateway.config, "accepted") == []
    assert list((spool / "queue").iterdir()) == []


def test_too_many_errors_closes_with_421(gateway):
    limit = gateway.gateway.config.limits.max_errors
    with session(gateway.port) as c:
        for _ in range(limit - 1):
            assert c.cmd("RCPT TO:<x@example.com>").startswith("503")
        c.send(b"RCPT TO:<x@example.com>\r\n")
        assert c.reply().startswith("503")
        assert c.reply().startswith("421 4.7.0")
        assert c.closed()


def test_connections_beyond_the_per_ip_limit_get_421(make_config):
    cfg = make_config(limits={"max_connections_per_ip": 2})
    with GatewayThread(cfg) as gw:
        a, b = RawClient(gw.port), RawClient(gw.port)
        c = RawClient(gw.port)
        assert c.greeting.startswith("421 4.7.0")
        assert c.closed()
        other = RawClient(gw.port, source="127.0.0.3")  # another IP is not affected
        assert other.greeting.startswith("220")
        for x in (a, b, c, other):
            x.close()


def test_unrecognised_commands_end_the_session_with_421(gateway):
    with session(gateway.port) as c:
        replies = [c.cmd("BOGUS") for _ in range(5)]
    assert all(r.startswith("500") for r in replies[:-1])
    assert replies[-1].startswith("421 4.7.0")


def test_idle_client_gets_421_and_is_closed(make_config):
    cfg = make_config(limits={"idle_timeout": "0.3s"})
    with GatewayThread(cfg) as gw, session(gw.port) as c:
        assert c.reply().startswith("421 4.4.2")
        assert c.closed()


def test_session_time_limit_closes_with_421(make_config):
    cfg = make_config(limits={"session_timeout": "0.5s"})
    with GatewayThread(cfg) as gw, session(gw.port) as c:
        c.cmd("NOOP")
        assert c.reply().startswith("421 4.4.2 Session time limit")


def test_auth_is_not_offered_without_tls(gateway):
    with smtplib.SMTP("127.0.0.1", gateway.port) as c:
        c.ehlo("x.test")
        assert not c.has_extn("auth")
