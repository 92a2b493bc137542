"""Suspension end to end in-process: the crossing message is the last one
accepted, later mail gets 450 4.7.1, spooled mail is held, a lift (made in the
state store, as the CLI does) releases it within a second."""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import logging
import smtplib
import time

import pytest

from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send_as_mfa
from tests.support.waiting import wait_until


def from_system(dest):
    return [m for m in dest.messages if m.mail_from == "a@mfa.gov.kz"]


def notices(dest):
    return [email.message_from_bytes(m.data, policy=email.policy.default)
            for m in dest.messages if m.mail_from == "postmaster@gw.test"]


def events(gw, kind):
    lines = gw.gateway.config.gateway.event_log.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


_prefixes = itertools.count()


@pytest.fixture(params=["embedded", "redis"])
def gw(request, make_config, dest, redis_server):
    dest.faults.data = "451 4.3.0 not now"  # keep mail spooled so that holding shows
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      anomaly={"rules": FOUR_CROSS},
                      state={"backend": request.param, "redis_url": redis_server.url,
                             "redis_prefix": f"susp{next(_prefixes)}:"},
                      gateway={"status_url": "https://gw.example/v1/systems/{system}/status"})
    with GatewayThread(cfg) as g:
        yield g


def test_crossing_message_is_accepted_then_mail_gets_450_and_waits(gw, dest):
    codes = [send_as_mfa(gw.port, n)[0] for n in range(4)]
    assert codes == [250, 250, 250, 250]  # the 4th crosses "more than 3": the last accepted
    code, text = send_as_mfa(gw.port, 5)
    assert code == 450
    assert text.startswith("4.7.1 Mail system mfa is suspended since ")
    assert "rule messages_10m" in text and "https://gw.example/v1/systems/mfa/status" in text
    (suspended,) = events(gw, "suspended")
    assert (suspended["rule"], suspended["observed"], suspended["threshold"]) == (
        "messages_10m", 4, 3)
    rejected = events(gw, "rejected")[-1]
    assert rejected["reason"] == "suspended" and rejected["code"] == 450
    store = gw.gateway.store
    wait_until(lambda: "mfa" in store.active())
    assert store.active()["mfa"].rule == "messages_10m"


def test_a_transaction_right_after_the_crossing_message_is_refused(gw, dest):
    """With shared counts the decision is a round trip away: MAIL FROM waits
    for the system's decisions in flight, so nothing slips in between."""
    for n in range(3):
        assert send_as_mfa(gw.port, n)[0] == 250
    with smtplib.SMTP("127.0.0.1", gw.port) as waiting:
        waiting.ehlo("mail.mfa.gov.kz")  # ready to send the moment the 4th is in
        assert send_as_mfa(gw.port, 3)[0] == 250
        assert waiting.mail("a@mfa.gov.kz")[0] == 450


def test_spooled_mail_is_held_and_a_lift_releases_it(gw, dest):
    for n in range(4):
        send_as_mfa(gw.port, n)
    spool = gw.gateway.spool
    wait_until(lambda: len(spool.ids("hold")) == 4, timeout=15, what="4 messages held")
    dest.faults.data = None
    store = gw.gateway.store
    wait_until(lambda: "mfa" in store.active())
    # each hold is recorded just after its file is moved: the lift comes after
    # the records, as an operator's would
    wait_until(lambda: sum(h.action == "held" for h in store.history("mfa")) == 4,
               what="4 holds recorded")
    # at the time it happens, as the CLI does: the history reads in time order
    assert store.lift("mfa", "operator-alice", "account password reset", time.time()) is not None
    wait_until(lambda: len(from_system(dest)) == 4, timeout=10, what="released mail delivered")
    assert len(events(gw, "released")) == 4 and events(gw, "lifted")
    assert send_as_mfa(gw.port, 9)[0] == 250  # relaying again
    history = [(h.action, h.by) for h in store.history("mfa")]
    assert history == [("suspended", "auto"), *[("held", "auto")] * 4,
                       ("lifted", "operator-alice")]


def test_owner_notices_arrive_once_in_kazakh_and_russian(gw, dest):
    for n in range(6):
        send_as_mfa(gw.port, n)
    dest.faults.data = None  # the notice itself was deferred with everything else
    wait_until(lambda: notices(dest), timeout=10, what="the suspension notice")
    (notice,) = notices(dest)
    assert notice["To"] == "postmaster@mfa.gov.kz"
    assert notice["Auto-Submitted"] == "auto-generated"
    text = notice.get_body(("plain",)).get_content()
    html = notice.get_body(("html",)).get_content()
    assert "жіберуді уақытша тоқтатты" in text and "приостановил пересылку" in text
    assert "messages_10m" in text and "https://gw.example/v1/systems/mfa/status" in text
    assert "lang=\"kk\"" in html and "lang=\"ru\"" in html
    # notices are the gateway's own mail: not counted, not held
    assert all(e.get("origin") == "notice" for e in events(gw, "delivered")
               if e["recipient"] == "postmaster@mfa.gov.kz")
    store = gw.gateway.store
    wait_until(lambda: "mfa" in store.active())
    store.lift("mfa", "operator-alice", "fixed", 0)
    wait_until(lambda: len(notices(dest)) == 2, timeout=10, what="the lift notice")
    assert "возобновлена" in notices(dest)[1].get_body(("plain",)).get_content()


def test_deferred_mail_goes_to_hold_at_the_suspension_not_at_its_next_try(make_config, dest):
    from mailgw.state.records import Suspension

    dest.faults.data = "451 4.3.0 not now"
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}", "first_retry": "1h",
                                "max_retry_interval": "1h"}, anomaly={"rules": []})
    with GatewayThread(cfg) as gw:
        spool = gw.gateway.spool
        ids = [send_as_mfa(gw.port, n)[1].split()[-1] for n in range(2)]
        wait_until(lambda: set(spool.ids("queue")) == set(ids)
                   and all(spool.read("queue", i).attempts == 1 for i in ids),
                   what="both deferred, for an hour")
        gw.gateway.store.suspend(Suspension("mfa", time.time(), "alice", reason="phishing"))
        wait_until(lambda: set(spool.ids("hold")) == set(ids), timeout=5,
                   what="the deferred mail held at once")
        # the owner notice waits in the queue too, deferred; it is not the system's mail
        wait_until(lambda: any(spool.read("queue", i).origin == "notice"
                               for i in spool.ids("queue")), what="the notice spooled")
        assert gw.gateway.hold.count("mfa") == 2
        assert [e["queue_id"] for e in events(gw, "held")] == ids


def test_weak_evidence_watches_alerts_the_operators_once_and_stops_nothing(make_config, dest):
    rule = {**FOUR_CROSS[0], "respond": "watch"}
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      anomaly={"rules": [rule]}, gateway={"operators": ["noc@gateway.gov.kz"]})
    with GatewayThread(cfg) as gw:
        assert [send_as_mfa(gw.port, n)[0] for n in range(6)] == [250] * 6  # nothing stopped
        wait_until(lambda: any(m.rcpt_tos == ["noc@gateway.gov.kz"] for m in dest.messages),
                   what="the operators' alert")
        (watch,) = events(gw, "watch")  # once a window, not at every message past the line
        assert (watch["system"], watch["rule"], watch["observed"]) == ("mfa", "messages_10m", 4)
        assert not events(gw, "suspended") and gw.gateway.suspensions.suspended("mfa") is None
        (alert,) = [email.message_from_bytes(m.data, policy=email.policy.default)
                    for m in dest.messages if m.rcpt_tos == ["noc@gateway.gov.kz"]]
        assert "unusual traffic from mfa" in alert["Subject"]
        wait_until(lambda: [h.action for h in gw.gateway.store.history("mfa")] == ["watch"],
                   what="the watch in the audit trail")


def test_the_log_says_who_was_suspended_and_lifted_why_in_plain_figures(make_config, dest,
                                                                        caplog):
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      anomaly={"rules": FOUR_CROSS})
    with caplog.at_level(logging.INFO, logger="mailgw"), GatewayThread(cfg) as gw:
        for n in range(4):
            send_as_mfa(gw.port, n)
        store = gw.gateway.store
        wait_until(lambda: "mfa" in store.active())
        store.lift("mfa", "bob", "password reset", time.time())
        wait_until(lambda: "lifted the suspension" in caplog.text, what="the lift's line")
    lines = [r.getMessage() for r in caplog.records if r.name == "mailgw.suspensions"]
    assert "suspending mfa: 4 messages in 10 min, limit 3 (rule messages_10m)" in lines
    (lift,) = [line for line in lines if line.startswith("lifted")]
    assert lift.startswith("lifted the suspension of mfa (since ")
    assert lift.endswith(": 4 messages in 10 min, limit 3 (rule messages_10m)) by bob: "
                         "password reset; its held mail is released")
