"""Rules of scope "sender": each sender judged on its own traffic inside its
system, counting in process and in a real Redis. A sender that crosses one
is restricted, not its system; what it does afterwards no longer counts
against the system; a domain is new when the system never mailed it; a
system's senders are counted up to a cap. End to end on real gateways: the
restricted sender gets 450 while its system's other sender is accepted, also
when its mail is spread over two gateways sharing Redis."""

from __future__ import annotations

import json

import pytest

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.rules import Rule
from mailgw.senders import Attribution, Policy
from mailgw.state.redis_store import RedisStore
from tests.support.mail import send
from tests.support.shared_windows import fresh_prefix, run_in_process, run_on_redis
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import mail_code
from tests.test_serve_e2e import two_gateways

T0 = 1_732_406_400.0
ALICE, BOB = "alice@mfa.gov.kz", "bob@mfa.gov.kz"


def accepted(ts, sender, rcpt="x@example.com", system="mfa"):
    return {"ts": ts, "system": system, "event": "accepted", "queue_id": "q",
            "sender": sender, "recipients": [rcpt], "size": 100}


def bounced(ts, sender, system="mfa"):
    return {"ts": ts, "system": system, "event": "bounced", "sender": sender,
            "recipient": "gone@example.com", "code": 550}


def senders_engine(*rules, policies=None, cap=5000, counted=()):
    return Engine(list(rules), senders=Attribution(policies or {}), max_senders=cap,
                  counted=counted)


SENDER_BURST = Rule("sender_burst", "ceiling", "messages", 600, 5, scope="sender")


@pytest.fixture(params=["in-process", "redis", "cluster"])
def run(request):
    if request.param == "in-process":
        return run_in_process
    url = request.getfixturevalue("redis_cluster" if request.param == "cluster"
                                  else "redis_server").url
    # each run counts afresh, as each of its engines does
    return lambda engine, events, senders=None: run_on_redis(url, fresh_prefix(), engine,
                                                             events, senders)


def test_the_sender_that_crosses_is_restricted_and_its_systems_other_senders_are_not(run):
    order = [BOB, ALICE, ALICE, BOB, ALICE, ALICE, BOB, ALICE, ALICE, BOB]
    events = [accepted(T0 + i, sender) for i, sender in enumerate(order)]
    (i, d), = run(Engine([]), events, senders_engine(SENDER_BURST))
    assert i == 8 and (d.system, d.sender, d.observed) == ("mfa", ALICE, 6)
    assert d.as_dict()["action"] == "restrict" and d.first_seen == T0 + 1


def test_a_restricted_senders_traffic_no_longer_counts_against_its_system(run):
    system_bounces = Rule("bounces_10m", "ceiling", "perm_failures", 600, 5)
    alice = [accepted(T0 + i, ALICE) for i in range(6)]  # restricted at the 6th
    # the bounces of what alice sent before, and three of bob's
    after = [bounced(T0 + 10 + i, ALICE) for i in range(8)] + \
            [bounced(T0 + 20 + i, BOB) for i in range(3)]
    decisions = run(Engine([system_bounces]), alice + after, senders_engine(SENDER_BURST))
    assert [(d.rule, d.sender) for _, d in decisions] == [("sender_burst", ALICE)]
    # without the sender rule the system takes the blame for alice
    (_, d), = run(Engine([system_bounces]), alice + after)
    assert (d.rule, d.sender) == ("bounces_10m", None)


SYSTEM_BOUNCES = Rule("bounces_10m", "ceiling", "perm_failures", 600, 5)


def test_a_system_rule_crossed_by_one_senders_traffic_restricts_that_sender(run):
    events = [bounced(T0 + i, BOB if i in (0, 4) else ALICE) for i in range(8)]
    (i, d), = run(Engine([SYSTEM_BOUNCES]), events,
                  senders_engine(SENDER_BURST, counted=[("perm_failures", 600)]))
    # the 6th bounce crosses the system's line; five of them are alice's
    assert (i, d.rule, d.system, d.sender) == (5, "bounces_10m", "mfa", ALICE)
    assert d.as_dict()["action"] == "restrict"


def test_a_system_rule_crossed_by_trouble_spread_over_senders_suspends_the_system(run):
    events = [bounced(T0 + i, f"u{i % 4}@mfa.gov.kz") for i in range(8)]
    (i, d), = run(Engine([SYSTEM_BOUNCES]), events,
                  senders_engine(SENDER_BURST, counted=[("perm_failures", 600)]))
    assert (i, d.rule, d.sender) == (5, "bounces_10m", None)


def test_a_system_rule_crossed_again_after_a_sender_is_contained_suspends_the_system(run):
    alice = [bounced(T0 + i, ALICE) for i in range(6)]
    # bob's trouble is his own, but coming after alice's it is the agency's
    bob = [bounced(T0 + 10 + i, BOB) for i in range(6)]
    decisions = run(Engine([SYSTEM_BOUNCES]), alice + bob,
                    senders_engine(SENDER_BURST, counted=[("perm_failures", 600)]))
    assert [(i, d.rule, d.sender) for i, d in decisions] == [
        (5, "bounces_10m", ALICE), (11, "bounces_10m", None)]


def test_a_lifted_senders_traffic_before_the_lift_is_not_held_against_its_system(run):
    alice = [bounced(T0 + i, ALICE) for i in range(6)]  # restricted at the 6th
    lift = {"ts": T0 + 10, "system": "mfa", "event": "unrestricted", "sender": ALICE}
    # she goes on: the system's window still holds her six from before the
    # lift, which were judged; her own count starts afresh and crosses again
    again = [bounced(T0 + 11 + i, ALICE) for i in range(6)]
    decisions = run(Engine([SYSTEM_BOUNCES]), [*alice, lift, *again],
                    senders_engine(SENDER_BURST, counted=[("perm_failures", 600)]))
    assert [(i, d.rule, d.sender) for i, d in decisions] == [
        (5, "bounces_10m", ALICE), (12, "bounces_10m", ALICE)]
    # trouble spread over others after her lift is still the system's
    others = [bounced(T0 + 11 + i, f"u{i}@mfa.gov.kz") for i in range(6)]
    decisions = run(Engine([SYSTEM_BOUNCES]), [*alice, lift, *others],
                    senders_engine(SENDER_BURST, counted=[("perm_failures", 600)]))
    assert [(i, d.rule, d.sender) for i, d in decisions] == [
        (5, "bounces_10m", ALICE), (12, "bounces_10m", None)]


def test_evidence_that_only_watches_suspends_a_system_with_a_sender_restricted(run):
    rule = Rule("bounces_1h", "ratio", "perm_failures", 3600, 0.05, per="attempts",
                min_count=5, min_sample=10, watch=1e-3, suspend=1e-7)
    # 8 of 20 bounce where the line lets 1 through: about 1 in 15,000 by chance
    outcomes = [{**bounced(T0 + i, BOB), "event": "delivered" if i % 10 < 6 else "bounced"}
                for i in range(20)]
    (_, d), = run(Engine([rule]), outcomes, senders_engine(SENDER_BURST))
    assert d.action == "watch"
    restricted = {"ts": T0 - 1, "system": "mfa", "event": "restricted", "sender": ALICE}
    (_, d), = run(Engine([rule]), [restricted, *outcomes], senders_engine(SENDER_BURST))
    assert (d.action, d.rule, d.sender) == ("suspend", "bounces_1h", None)
    # lifted, the system is held to the usual line again
    lifted = {**restricted, "event": "unrestricted"}
    (_, d), = run(Engine([rule]), [restricted, lifted, *outcomes], senders_engine(SENDER_BURST))
    assert d.action == "watch"


def outcomes(hours, bounced_of_seven, sender=ALICE):
    """A mailbox's delivery attempts, 14 an hour evenly, `bounced_of_seven`
    of each seven bounced."""
    return [{**bounced(T0 + i * 3600 / 14, sender),
             **({} if i % 7 < bounced_of_seven else {"event": "delivered", "code": 250})}
            for i in range(hours * 14)]


def test_a_mailboxs_drip_of_bounces_too_slow_for_an_hour_shows_over_six(run):
    from mailgw.anomaly.judge import engines
    from mailgw.config import Anomaly

    # four bounces an hour never make an hour's least count (10) of failures;
    # hours of 29% against the line of 6% do, in the six hours judged
    systems, senders = engines(Anomaly(), [])
    (i, d), = [(i, d) for i, d in run(systems, outcomes(7, 2), senders)
               if d.action != "watch"]
    assert (d.rule, d.sender) == ("sender_bounce_rate_6h", ALICE)
    assert 4 * 14 <= i < 5 * 14  # in its fifth hour
    # 14% of them is twice the line but not evidence of it, nor is 29% for
    # two hours (its least count of failures)
    systems, senders = engines(Anomaly(), [])
    assert [d for _, d in run(systems, outcomes(7, 1), senders) if d.action != "watch"] == []
    systems, senders = engines(Anomaly(), [])
    assert run(systems, outcomes(2, 2), senders) == []


def test_a_domain_is_new_when_its_system_never_mailed_it(run):
    new_domains = Rule("sender_new", "ceiling", "to_new_domains", 3600, 2, scope="sender")
    alice = [accepted(T0 + i, ALICE, f"x@d{i}.example") for i in range(2)]
    bob_old = [accepted(T0 + 10 + i, BOB, f"y@d{i}.example") for i in range(2)]
    bob_new = [accepted(T0 + 20 + i, BOB, f"y@e{i}.example") for i in range(3)]
    (i, d), = run(Engine([]), alice + bob_old + bob_new, senders_engine(new_domains))
    # bob's mail to the system's correspondents is nothing new: his third
    # domain new to the system crosses
    assert (i, d.sender, d.observed) == (6, BOB, 3)


def test_subaddresses_of_one_mailbox_are_one_sender(run):
    policy = {"mfa": Policy(subaddress="+")}
    events = [accepted(T0 + i, f"alice+t{i}@MFA.gov.kz") for i in range(6)]
    (_, d), = run(Engine([]), events, senders_engine(SENDER_BURST, policies=policy))
    assert d.sender == ALICE


def test_a_lifted_restriction_counts_afresh_and_a_recorded_one_is_obeyed(run):
    events = [accepted(T0 + i, ALICE) for i in range(6)]
    lift = {"ts": T0 + 7, "system": "mfa", "event": "unrestricted", "sender": ALICE}
    again = [accepted(T0 + 8 + i, ALICE) for i in range(6)]
    restricted = {"ts": T0 + 20, "system": "mfa", "event": "restricted", "sender": BOB}
    bob = [accepted(T0 + 21 + i, BOB) for i in range(6)]
    decisions = run(Engine([]), [*events, lift, *again, restricted, *bob],
                    senders_engine(SENDER_BURST))
    assert [(i, d.sender) for i, d in decisions] == [(5, ALICE), (12, ALICE)]


def test_a_sender_lifted_with_a_grace_is_spared_until_it_ends(run):
    """Neither judged nor counted, by its rules or its system's, till the
    grace ends; then judged afresh. Restricted again, the grace is over."""
    system_burst = Rule("system_burst", "ceiling", "messages", 600, 10)
    first = [accepted(T0 + i, ALICE) for i in range(6)]  # restricted at the 6th
    lift = {"ts": T0 + 7, "system": "mfa", "event": "unrestricted", "sender": ALICE,
            "grace_until": T0 + 607}
    during = [accepted(T0 + 8 + i * 40, ALICE) for i in range(12)]
    after = [accepted(T0 + 608 + i, ALICE) for i in range(6)]

    def decided(lift):
        return [(i, d.rule, d.sender) for i, d in run(
            Engine([system_burst]), [*first, lift, *during, *after],
            senders_engine(SENDER_BURST, counted=[("messages", 600)]))]

    assert decided(lift) == [(5, "sender_burst", ALICE), (24, "sender_burst", ALICE)]
    # without the grace her mail after the lift restricts her again at once
    no_grace = {k: v for k, v in lift.items() if k != "grace_until"}
    assert decided(no_grace)[:2] == [(5, "sender_burst", ALICE), (12, "sender_burst", ALICE)]
    # restricted again by hand within the grace, then lifted without one
    again = [{**no_grace, "event": "restricted", "ts": T0 + 100},
             {**no_grace, "ts": T0 + 101}]
    decisions = run(Engine([]), [*first, lift, *again, *during[3:]],
                    senders_engine(SENDER_BURST))
    assert [(i, d.sender) for i, d in decisions] == [(5, ALICE), (14, ALICE)]


def test_a_systems_senders_beyond_the_cap_give_way_to_the_idle_longest():
    engine = senders_engine(SENDER_BURST, cap=2)
    for n, sender in enumerate((ALICE, BOB, ALICE, "carol@mfa.gov.kz")):
        engine.observe(accepted(T0 + n, sender))
    assert sorted(engine.local.systems) == ["mfa alice@mfa.gov.kz", "mfa carol@mfa.gov.kz"]
    assert "mfa bob@mfa.gov.kz" not in engine.first_seen
    engine.observe(accepted(T0 + 9, "dan@other.kz", system="other"))  # a cap per system
    assert len(engine.local.systems) == 3


def test_a_sender_idle_past_its_windows_is_forgotten_but_not_as_a_newcomer():
    engine = senders_engine(SENDER_BURST)  # windows of 10 minutes
    engine.observe(accepted(T0, ALICE))
    engine.observe(accepted(T0 + 60, BOB))
    assert sorted(engine.local.systems) == ["mfa alice@mfa.gov.kz", "mfa bob@mfa.gov.kz"]
    engine.observe(accepted(T0 + 700, BOB))  # alice idle for more than 10 min and a bucket
    assert list(engine.local.systems) == ["mfa bob@mfa.gov.kz"]
    # back: counted afresh, but the system knows her; carol is new to it
    decisions = [d for n in range(6) for sender in (ALICE, "carol@mfa.gov.kz")
                 for d in engine.observe(accepted(T0 + 800 + n, sender))]
    assert [(d.sender, d.first_seen) for d in decisions] == [
        (ALICE, None), ("carol@mfa.gov.kz", T0 + 800)]


def test_an_engine_takes_only_rules_of_its_scope():
    with pytest.raises(ValueError, match="scope"):
        Engine([SENDER_BURST])


SENDER_RULE = """[[anomaly.rules]]
name = "sender_burst"
scope = "sender"
kind = "ceiling"
metric = "messages"
window = "10m"
threshold = 3
"""


def test_two_gateways_restrict_a_sender_whose_mail_is_spread_over_both(dest, redis_server,
                                                                         tmp_path):
    """The restricted sender gets 450 from both, its mail waiting at either is
    held, and its colleague's is accepted and delivered."""
    dest.faults.data = "451 4.3.0 not now"  # mail stays spooled until the restriction
    state = f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n' \
            'redis_prefix = "twin-senders:"\n'
    gateways = two_gateways(tmp_path, dest.port, SENDER_RULE + state)
    a, b = gateways

    def events(kind: str) -> list[dict]:
        found = []
        for gw in gateways:
            log = gw.config_path.parent / "events.jsonl"
            lines = log.read_text().splitlines() if log.exists() else []
            found += [e for e in map(json.loads, lines) if e["event"] == kind]
        return found

    try:
        a.start(), b.start()
        # two each: under the rule on either gateway alone; bob's three
        # (the rule's most) between
        for n, gw in enumerate((a, b, a, b)):
            assert send(gw.port, n, ALICE)[0] == 250
            if n < 3:
                assert send(gw.port, 100 + n, BOB)[0] == 250
        wait_until(lambda: mail_code(a.port, ALICE) == 450 and mail_code(b.port, ALICE) == 450,
                   timeout=5, what="alice restricted on both")
        assert mail_code(a.port, BOB) == mail_code(b.port, BOB) == 250
        assert mail_code(a.port) == 250  # the system's other senders flow
        wait_until(lambda: len([e for e in events("held") if e.get("sender") == ALICE]) == 4,
                   timeout=10, what="alice's four messages held, two on each gateway")
        # decided once: one record, one audit entry; each gateway's log says
        # it took effect there
        store = RedisStore(redis_server.url, "twin-senders:")
        try:
            assert [h.action for h in store.history("mfa") if h.action != "held"] == ["restricted"]
            (record,) = store.active().values()
            assert (record.sender, record.rule, record.observed) == (ALICE, "sender_burst", 4)
        finally:
            store.close()
        assert len(events("restricted")) == 2
        dest.faults.data = None
        wait_until(lambda: len([m for m in dest.messages if m.mail_from == BOB]) == 3,
                   timeout=15, what="bob's mail delivered")
        assert not [m for m in dest.messages if m.mail_from == ALICE]
    finally:
        a.stop(), b.stop()
