"""SMTP AUTH: offered only after STARTTLS, identifies a system from any IP,
wrong credentials get 535 and a rejected event."""

from __future__ import annotations

import base64
import json
import smtplib
import ssl

import pytest
import trustme

from mailgw import hashing
from tests.conftest import MFA
from tests.support.gateway import GatewayThread
from tests.support.waiting import wait_until


@pytest.fixture(params=["asyncio", "uvloop"])
def tls_gateway(request, make_config, dest, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("gw.test", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "gw.pem"))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    system = dict(MFA, networks=["10.99.0.0/16"],
                  auth=[{"username": "mfa-relay", "password_hash": hashing.hash_password("s3cret")}])
    cfg = make_config(
        gateway={"tls": {"cert": str(tmp_path / "gw.pem"), "key": str(tmp_path / "gw.pem")},
                 "event_loop": request.param},
        delivery={"relayhost": f"[127.0.0.1]:{dest.port}"}, systems=[system],
    )
    with GatewayThread(cfg) as gw:
        yield gw, client_ctx


def test_auth_after_starttls_lets_a_system_relay_from_outside_its_networks(tls_gateway, dest):
    gw, ctx = tls_gateway
    with smtplib.SMTP("127.0.0.1", gw.port) as c:
        c.ehlo("laptop.mfa.gov.kz")
        assert c.has_extn("starttls") and not c.has_extn("auth")
        c.starttls(context=ctx)
        c.ehlo("laptop.mfa.gov.kz")
        assert "PLAIN" in c.esmtp_features["auth"]
        c.login("mfa-relay", "s3cret")
        c.sendmail("a@mfa.gov.kz", ["x@example.com"], b"Subject: t\r\n\r\nbody\r\n")
    wait_until(lambda: dest.messages)
    assert b"with ESMTPSA" in dest.messages[0].data


def test_wrong_password_gets_535_and_no_relaying(tls_gateway, dest):
    gw, ctx = tls_gateway
    with smtplib.SMTP("127.0.0.1", gw.port) as c:
        c.ehlo("x.test")
        c.starttls(context=ctx)
        c.ehlo("x.test")
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login("mfa-relay", "wrong")
        assert e.value.smtp_code == 535
        assert c.mail("a@mfa.gov.kz")[0] == 250, "MAIL"
        assert c.rcpt("x@example.com")[0] == 550
    log = gw.gateway.config.gateway.event_log.read_text().splitlines()
    assert any(json.loads(line).get("reason") == "auth_failed" for line in log)


def test_an_overlong_auth_response_is_refused_as_too_long_and_the_session_goes_on(
        tls_gateway, caplog):
    gw, ctx = tls_gateway
    with smtplib.SMTP("127.0.0.1", gw.port) as c:
        c.ehlo("x.test")
        c.starttls(context=ctx)
        c.ehlo("x.test")
        assert c.docmd("AUTH", "LOGIN")[0] == 334
        assert c.docmd("eA==" * 2000) == (500, b"5.5.2 Line too long")
        assert c.noop()[0] == 250
    assert "internal error" not in caplog.text


def test_refusals_of_the_auth_dialogue_have_enhanced_codes_and_rejected_events(tls_gateway):
    gw, ctx = tls_gateway
    plain = base64.b64encode(b"\0mfa-relay\0s3cret").decode()
    with smtplib.SMTP("127.0.0.1", gw.port) as c:
        c.ehlo("x.test")
        c.starttls(context=ctx)
        c.ehlo("x.test")
        assert c.docmd("AUTH") == (501, b"5.5.4 Syntax: AUTH mechanism [initial-response]")
        assert c.docmd("AUTH", "PLAIN a b") == (501, b"5.5.4 Syntax: AUTH mechanism [initial-response]")
        assert c.docmd("AUTH", "CRAM-MD5") == (504, b"5.5.4 Unrecognized authentication type")
        assert c.docmd("AUTH", "PLAIN") == (334, b"")
        assert c.docmd("*") == (501, b"5.7.0 Authentication aborted")
        assert c.docmd("AUTH", "PLAIN !!") == (501, b"5.5.2 Cannot decode base64")
        assert c.docmd("AUTH", "PLAIN " + base64.b64encode(b"no nul").decode()) == (
            501, b"5.5.2 Cannot split the authentication value")
        assert c.docmd("AUTH", "PLAIN " + plain)[0] == 235
        assert c.docmd("AUTH", "PLAIN " + plain) == (503, b"5.5.1 Error: already authenticated")
    log = gw.gateway.config.gateway.event_log.read_text().splitlines()
    assert [(e["reason"], e["code"]) for e in map(json.loads, log) if e["event"] == "rejected"] == [
        ("bad_syntax", 501), ("bad_syntax", 501), ("unknown_auth_mechanism", 504),
        ("auth_aborted", 501), ("bad_syntax", 501), ("bad_syntax", 501), ("bad_sequence", 503)]


def authed(gw, ctx, source: str, password: str = "s3cret") -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", gw.port, source_address=(source, 0))
    try:
        c.ehlo("laptop.mfa.gov.kz")
        c.starttls(context=ctx)
        c.ehlo("laptop.mfa.gov.kz")
        c.login("mfa-relay", password)
    except BaseException:
        c.close()
        raise
    return c


def events(gw, kind):
    log = gw.gateway.config.gateway.event_log.read_text().splitlines()
    return [e for e in map(json.loads, log) if e["event"] == kind]


def test_a_burst_of_wrong_passwords_for_a_systems_login_alerts_the_operators(tls_gateway):
    gw, ctx = tls_gateway
    for _ in range(21):  # the default auth_failures_10m watches beyond 20
        with pytest.raises(smtplib.SMTPAuthenticationError):
            authed(gw, ctx, "127.0.0.1", password="guess")
    wait_until(lambda: any(e.get("rule") == "auth_failures_10m" for e in events(gw, "watch")),
               what="the watch")
    (watch,) = [e for e in events(gw, "watch") if e.get("rule") == "auth_failures_10m"]
    assert watch["system"] == "mfa" and watch["observed"] == 21
    assert {e["system"] for e in events(gw, "rejected") if e["reason"] == "auth_failed"} == {"mfa"}
    with authed(gw, ctx, "127.0.0.1") as c:  # the right password still works
        assert c.mail("a@mfa.gov.kz")[0] == 250


def test_a_login_used_from_more_than_ten_addresses_in_an_hour_restricts_its_sender(
        tls_gateway, dest):
    gw, ctx = tls_gateway
    for n in range(11):  # the default login_spread_1h: more than 10
        with authed(gw, ctx, f"127.0.0.{n + 2}") as c:
            c.sendmail("a@mfa.gov.kz", ["x@example.com"], b"Subject: t\r\n\r\nbody\r\n")
    wait_until(lambda: events(gw, "restricted"), what="the restriction")
    (restricted,) = events(gw, "restricted")
    assert (restricted["sender"], restricted["rule"], restricted["observed"]) == (
        "a@mfa.gov.kz", "login_spread_1h", 11)
    with authed(gw, ctx, "127.0.0.2") as c:
        assert c.mail("a@mfa.gov.kz")[0] == 450
        c.rset()
        assert c.mail("b@mfa.gov.kz")[0] == 250  # the system's other senders go on
