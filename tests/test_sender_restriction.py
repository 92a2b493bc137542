"""One sender of a system restricted, end to end on a real gateway and a real
destination: that sender gets 450 4.7.1 naming the address at MAIL FROM and
its spooled mail is held, while another sender of the same system is
delivered; the owner notice names the mailbox; a lift of that sender
releases its mail; restrictions of several senders become the system's
suspension."""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import time
import urllib.request

import pytest

from mailgw.anomaly.rules import Decision
from mailgw.hashing import hash_token
from mailgw.state.records import Suspension
from tests.support.gateway import GatewayThread
from tests.support.mail import send
from tests.support.waiting import wait_until
from tests.test_http_api import get

CLERK, BOSS = "clerk@mfa.gov.kz", "boss@mfa.gov.kz"
TOKEN = "operator-token-for-the-restriction-tests"

_prefixes = itertools.count()


def events(gw, kind):
    lines = gw.gateway.config.gateway.event_log.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def delivered_from(dest, sender):
    return [m for m in dest.messages if m.mail_from == sender]


def notices(dest):
    return [email.message_from_bytes(m.data, policy=email.policy.default)
            for m in dest.messages if m.mail_from == "postmaster@gw.test"]


@pytest.fixture(params=["embedded", "redis"])
def gw(request, make_config, dest, redis_server):
    dest.faults.data = "451 4.3.0 not now"  # keep mail spooled so that holding shows
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      # restrictions here by hand or by decision; escalation
                      # by three, so that the rotation rule shows on its own
                      anomaly={"rules": [], "senders": {"escalate_after": 3}},
                      state={"backend": request.param, "redis_url": redis_server.url,
                             "redis_prefix": f"restrict{next(_prefixes)}:"},
                      http={"listen": ["127.0.0.1:0"], "operator_tokens": [
                          {"name": "alice", "token_hash": hash_token(TOKEN)}]},
                      gateway={"status_url": "https://gw.example/v1/systems/{system}/status"})
    with GatewayThread(cfg) as g:
        yield g


def restrict(gw, sender, by="operator-alice"):
    """As `mailgw suspend mfa --sender` does: into the store; the running
    gateway obeys within a second."""
    record = gw.gateway.store.suspend(Suspension("mfa", time.time(), by,
                                                 reason="phishing reported", sender=sender))
    assert record is not None
    wait_until(lambda: gw.gateway.suspensions.restricted("mfa", sender) is not None,
               what="the restriction taken in")


def test_the_restricted_sender_waits_while_the_systems_other_senders_flow(gw, dest):
    assert [send(gw.port, n, CLERK)[0] for n in range(2)] == [250, 250]
    restrict(gw, CLERK)
    code, text = send(gw.port, 3, CLERK)
    assert code == 450
    assert text.startswith(f"4.7.1 Sender {CLERK} is restricted since ")
    assert "https://gw.example/v1/systems/mfa/status" in text and "Mail system" not in text
    assert send(gw.port, 4, BOSS)[0] == 250  # the same system, another sender
    spool = gw.gateway.spool
    wait_until(lambda: len(spool.ids("hold")) == 2, timeout=15, what="clerk's mail held")
    dest.faults.data = None
    wait_until(lambda: delivered_from(dest, BOSS), timeout=10, what="boss's mail delivered")
    assert not delivered_from(dest, CLERK)
    held = events(gw, "held")
    assert len(held) == 2 and {e["sender"] for e in held} == {CLERK}
    assert events(gw, "rejected")[-1]["reason"] == "restricted"

    status, body = get(f"{gw.http}/v1/systems/mfa/status", TOKEN)
    assert status == 200 and body["state"] == "active"
    (shown,) = body["restricted_senders"]
    assert shown["sender"] == CLERK and shown["by"] == "operator-alice"

    assert gw.gateway.store.lift("mfa", "operator-alice", "password reset", time.time(),
                                 sender=CLERK) is not None
    wait_until(lambda: len(delivered_from(dest, CLERK)) == 2, timeout=10,
               what="clerk's held mail delivered after the lift")
    (lifted,) = events(gw, "unrestricted")
    assert lifted["sender"] == CLERK and lifted["by"] == "operator-alice"
    assert send(gw.port, 5, CLERK)[0] == 250
    history = [(h.action, h.details.get("sender")) for h in gw.gateway.store.history("mfa")]
    assert history[0] == ("restricted", CLERK) and history[-1] == ("unrestricted", CLERK)
    assert [a for a, _ in history].count("held") == 2


def test_a_sender_lifted_with_a_grace_is_shown_spared_until_it_ends(gw, dest):
    restrict(gw, CLERK)
    until = time.time() + 3600
    assert gw.gateway.store.lift("mfa", "operator-alice", "press release", time.time(),
                                 sender=CLERK, grace_until=until) is not None
    wait_until(lambda: gw.gateway.suspensions.restricted("mfa", CLERK) is None,
               what="the lift taken in")
    status, body = get(f"{gw.http}/v1/systems/mfa/status", TOKEN)
    assert status == 200 and body["restricted_senders"] == []
    # as Redis keeps times: to the ms
    assert body["spared_senders"] == [{"sender": CLERK, "until": pytest.approx(until, abs=1e-3),
                                       "by": "operator-alice", "reason": "press release"}]
    request = urllib.request.Request(f"{gw.http}/systems/mfa?lang=ru",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        page = response.read().decode()
    assert "Отправители, освобождённые от проверки" in page and CLERK in page
    # restricted again: spared no more
    restrict(gw, CLERK)
    assert get(f"{gw.http}/v1/systems/mfa/status", TOKEN)[1]["spared_senders"] == []


def test_the_owner_notice_names_the_mailbox_and_what_to_do(gw, dest):
    dest.faults.data = None
    restrict(gw, CLERK)
    wait_until(lambda: notices(dest), timeout=10, what="the restriction notice")
    (notice,) = notices(dest)
    assert CLERK in notice["Subject"]
    text = notice.get_body(("plain",)).get_content()
    assert f"отправителя {CLERK}" in text and f"{CLERK} жіберушісінен" in text
    assert "смените пароль" in text and "құпиясөзін ауыстырыңыз" in text
    assert "Mail from the system's other senders flows as usual" in text
    gw.gateway.store.lift("mfa", "operator-alice", "fixed", time.time(), sender=CLERK)
    wait_until(lambda: len(notices(dest)) == 2, timeout=10, what="the lift notice")
    assert f"отправителя {CLERK}" in notices(dest)[1].get_body(("plain",)).get_content()


def decide(gw, sender, ts, first_seen=None):
    """A decision of the judge on one sender, handed to the suspensions as
    the judge hands it (the engine's own tests cover how it is reached)."""
    decision = Decision(ts, "mfa", "sender_rule", 40, 10, 3600, sender=sender,
                        first_seen=first_seen)

    async def decided() -> None:  # on the gateway's loop, as the judge calls it
        gw.gateway.suspensions.decided(decision)

    gw.call(decided())


def test_three_senders_restricted_within_the_hour_suspend_the_system(gw, dest):
    now = time.time()
    for n, sender in enumerate(["a1@mfa.gov.kz", "a2@mfa.gov.kz"]):
        decide(gw, sender, now + n)
        assert send(gw.port, n, sender)[0] == 450
    assert send(gw.port, 5, BOSS)[0] == 250  # two: still the senders' own trouble
    decide(gw, "a3@mfa.gov.kz", now + 2)
    code, text = send(gw.port, 6, BOSS)
    assert code == 450 and text.startswith("4.7.1 Mail system mfa is suspended since ")
    assert "restrictions of its senders" in text
    (suspended,) = events(gw, "suspended")
    assert suspended["escalated"] == "several"
    assert suspended["senders"] == ["a1@mfa.gov.kz", "a2@mfa.gov.kz", "a3@mfa.gov.kz"]
    store = gw.gateway.store
    wait_until(lambda: "mfa" in store.active(), what="the suspension recorded")
    assert len([k for k in store.active() if k.startswith("mfa ")]) == 3


def test_a_new_sender_restricted_after_another_suspends_the_system(gw, dest):
    """A spammer changing MAIL FROM: the second address was first seen
    after the first one's restriction."""
    now = time.time()
    decide(gw, "a1@mfa.gov.kz", now, first_seen=now - 3000)
    assert send(gw.port, 1, BOSS)[0] == 250
    decide(gw, "a2@mfa.gov.kz", now + 60, first_seen=now + 10)
    assert send(gw.port, 2, BOSS)[0] == 450
    (suspended,) = events(gw, "suspended")
    assert suspended["escalated"] == "rotation"
    assert suspended["senders"] == ["a1@mfa.gov.kz", "a2@mfa.gov.kz"]


def test_a_sender_seen_before_the_other_restriction_does_not_escalate(gw, dest):
    now = time.time()
    decide(gw, "a1@mfa.gov.kz", now, first_seen=now - 3000)
    decide(gw, "a2@mfa.gov.kz", now + 60, first_seen=now - 2000)
    assert send(gw.port, 1, BOSS)[0] == 250
    assert not events(gw, "suspended")
