"""Delivery against real SMTP destinations: per-recipient outcomes, retries,
bounces (DSN), MX routing through a real DNS server, TLS, connection sharing."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import ssl

import pytest
import trustme

from tests.support.destination import Destination
from tests.support.gateway import GatewayThread
from tests.support.waiting import wait_until

MSG = b"From: a@mfa.gov.kz\r\nTo: x@example.com\r\nSubject: t\r\nMessage-ID: <m1@mfa.gov.kz>\r\n\r\nbody\r\n"


def send(port: int, rcpts: list[str], sender: str = "a@mfa.gov.kz", body: bytes = MSG) -> str:
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.ehlo("mail.mfa.gov.kz")
        c.mail(sender)
        for r in rcpts:
            code, text = c.rcpt(r)
            assert code == 250, text
        code, text = c.data(body)
        assert code == 250, text
        return text.decode().split()[-1]


def events(gw: GatewayThread, kind: str | None = None) -> list[dict]:
    lines = gw.gateway.config.gateway.event_log.read_text().splitlines()
    return [e for e in map(json.loads, lines) if kind is None or e["event"] == kind]


def dsns(dest: Destination) -> list:
    return [email.message_from_bytes(m.data, policy=email.policy.default)
            for m in dest.messages if m.mail_from == ""]


def test_each_recipient_gets_its_own_outcome_and_one_dsn_reports_the_failure(gateway, dest):
    dest.faults.rcpt["nobody@example.com"] = "550 5.1.1 <nobody@example.com>: no such user"
    queue_id = send(gateway.port, ["x@example.com", "nobody@example.com"])
    wait_until(lambda: dsns(dest), what="a DSN")
    assert [m.rcpt_tos for m in dest.messages if m.mail_from] == [["x@example.com"]]
    (dsn,) = dsns(dest)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert "nobody@example.com" in dsn.as_string() and "5.1.1" in dsn.as_string()
    by_kind = {e["event"]: e for e in events(gateway) if e.get("queue_id") == queue_id}
    assert by_kind["delivered"]["recipient"] == "x@example.com"
    assert by_kind["bounced"]["recipient"] == "nobody@example.com"
    assert by_kind["bounced"]["code"] == 550
    # the DSN's file goes once its delivery is settled, just after it arrives
    wait_until(lambda: not list(gateway.gateway.spool.root.glob("*/*.msg")), what="empty spool")


def test_null_sender_gets_no_dsn(gateway, dest):
    dest.faults.rcpt["nobody@example.com"] = "550 5.1.1 no such user"
    queue_id = send(gateway.port, ["nobody@example.com"], sender="")
    wait_until(lambda: any(e["event"] == "bounced" and e["queue_id"] == queue_id
                           for e in events(gateway)))
    wait_until(lambda: not list(gateway.gateway.spool.root.glob("*/*.msg")), what="empty spool")
    assert dest.messages == []


def test_temporary_failure_is_retried_after_backoff_and_then_delivered(gateway, dest):
    dest.faults.data = "451 4.3.0 try again later"
    queue_id = send(gateway.port, ["x@example.com"])
    spool = gateway.gateway.spool
    waiting = spool.root / "queue" / f"{queue_id}.msg"
    # the event is logged as the outcome is known; the message is back in the
    # queue once its new state is on disk
    wait_until(lambda: events(gateway, "deferred") and waiting.exists(), what="a deferral")
    meta, data = spool.load("queue", queue_id)
    assert meta.attempts == 1 and meta.recipients[0].code == 451
    assert data.endswith(MSG)
    dest.faults.data = None
    wait_until(lambda: queue_id in dest.received_ids(), what="delivery on retry")
    assert dsns(dest) == []


def test_mail_that_stays_undeliverable_expires_into_one_dsn(make_config, dest):
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}",
                                "first_retry": "0.2s", "max_queue_lifetime": "1s"})
    dest.faults.rcpt["slow@example.com"] = "450 4.2.0 mailbox busy"
    with GatewayThread(cfg) as gw:
        send(gw.port, ["slow@example.com"])
        wait_until(lambda: dsns(dest), what="an expiry DSN")
    (dsn,) = dsns(dest)
    assert "4.4.7" in dsn.as_string()


def test_mx_routing_through_real_dns_and_null_mx_bounces_at_once(make_config, dest, dns):
    dns.add(
        "example.test. 60 IN MX 10 mx.example.test.\n"
        "mx.example.test. 60 IN A 127.0.0.1\n"
        "nomail.test. 60 IN MX 0 .\n"
        "mfa.gov.kz. 60 IN A 127.0.0.1\n"  # where the DSN goes back to
    )
    cfg = make_config(delivery={"resolver": [f"127.0.0.1:{dns.port}"], "port": dest.port})
    with GatewayThread(cfg) as gw:
        ok = send(gw.port, ["x@example.test"])
        wait_until(lambda: ok in dest.received_ids())
        dead = send(gw.port, ["x@nomail.test"])
        wait_until(lambda: dsns(dest), what="null MX DSN")
        bounced = [e for e in events(gw, "bounced") if e["queue_id"] == dead]
    assert bounced[0]["code"] == 556 and "5.1.10" in bounced[0]["response"]
    assert events(gw, "deferred") == []


def test_messages_to_one_destination_share_connections(gateway, dest):
    ids = [send(gateway.port, [f"u{i}@example.com"]) for i in range(30)]
    wait_until(lambda: set(ids) <= dest.received_ids(), what="all 30")
    assert dest.connections < 30


@pytest.fixture
def tls_dest(tmp_path):
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.secure.test").configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with Destination(tls_context=ctx) as d:
        yield d, ca_file


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_starttls_is_used_when_offered(make_config, tls_dest, loop):
    dest, _ = tls_dest
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      gateway={"event_loop": loop})
    with GatewayThread(cfg) as gw:
        qid = send(gw.port, ["x@example.com"])
        wait_until(lambda: qid in dest.received_ids())
    assert dest.messages[0].tls


def test_required_tls_verifies_the_certificate_and_waits_when_tls_is_missing(
        make_config, tls_dest, dest, dns):
    secure, ca_file = tls_dest
    dns.add("secure.test. 60 IN MX 10 mx.secure.test.\nmx.secure.test. 60 IN A 127.0.0.1\n")
    cfg = make_config(delivery={
        "resolver": [f"127.0.0.1:{dns.port}"], "port": secure.port, "tls_ca_file": str(ca_file),
        "tls_required_domains": ["secure.test"],
        "routes": {"plain.test": f"[127.0.0.1]:{dest.port}"},
    })
    cfg2 = cfg.model_copy(update={"delivery": cfg.delivery.model_copy(
        update={"tls_required_domains": ["secure.test", "plain.test"]})})
    with GatewayThread(cfg2) as gw:
        ok = send(gw.port, ["x@secure.test"])
        wait_until(lambda: ok in secure.received_ids())
        waits = send(gw.port, ["x@plain.test"])
        wait_until(lambda: any(e["queue_id"] == waits for e in events(gw, "deferred")))
        deferred = [e for e in events(gw, "deferred") if e["queue_id"] == waits][0]
    assert secure.messages[0].tls
    assert deferred["code"] == 454 and "STARTTLS" in deferred["response"]
    assert dest.messages == []


def test_destination_down_defers_and_keeps_the_mail(make_config, dest):
    cfg = make_config(delivery={"relayhost": "[127.0.0.1]:1"})  # nothing listens there
    with GatewayThread(cfg) as gw:
        qid = send(gw.port, ["x@example.com"])
        wait_until(lambda: events(gw, "deferred"))
        wait_until(lambda: (gw.gateway.spool.root / "queue" / f"{qid}.msg").exists())


def test_connections_per_destination_are_capped(make_config, dest):
    dest.faults.delay = 0.05  # every message takes a while: workers pile up
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}",
                                "max_connections_per_destination": 2})
    with GatewayThread(cfg) as gw:
        ids = [send(gw.port, [f"u{i}@example.com"]) for i in range(12)]
        wait_until(lambda: set(ids) <= dest.received_ids(), what="all 12")
    assert dest.connections <= 2


def test_a_destination_that_stops_answering_defers_the_mail_after_command_timeout(make_config,
                                                                                  dest):
    dest.faults.delay = 2.5  # sits on DATA longer than the gateway waits
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}", "command_timeout": "1s"})
    with GatewayThread(cfg) as gw:
        qid = send(gw.port, ["x@example.com"])
        wait_until(lambda: events(gw, "deferred"), timeout=10, what="a deferral")
        (deferred,) = events(gw, "deferred")[:1]
        assert deferred["queue_id"] == qid and "no reply within 1s" in deferred["response"]
        dest.faults.delay = 0
        wait_until(lambda: events(gw, "delivered"), timeout=15, what="delivery on retry")


def test_new_mail_waits_behind_mail_already_due_instead_of_passing_it(make_config, dest):
    """Mail waiting since before a restart (recovered) goes before mail that
    arrives after it, though a slot is free the moment the new mail comes."""
    from mailgw.relay.spool import Meta, Recipient, new_queue_id

    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}",
                                "max_connections_per_destination": 1})
    with GatewayThread(cfg) as gw:
        spool, delivery = gw.gateway.spool, gw.gateway.delivery

        def message(n: int) -> tuple[Meta, bytes]:
            data = f"Subject: {n}\r\n\r\nbody\r\n".encode()
            meta = Meta(id=new_queue_id(), system="mfa", sender="a@mfa.gov.kz",
                        recipients=[Recipient(f"u{n}@example.com")], size=len(data),
                        received_at=gw.gateway.clock.now())
            spool.put(meta, data)
            return meta, data

        recovered = [message(n)[0] for n in range(5)]
        new, data = message(99)

        async def arrive() -> None:
            delivery.load(recovered)  # as at start, before the scheduler's turn
            delivery.submit(new, data)  # and new mail right then

        gw.call(arrive())
        wait_until(lambda: len(dest.messages) == 6, what="all six delivered")
        with dest.lock:
            order = [m.rcpt_tos[0] for m in dest.messages]
        assert order[-1] == "u99@example.com", order
