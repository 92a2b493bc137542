"""One behaviour, two backends: the embedded SQLite store and the Redis store
(a real redis-server, and a Redis Cluster of three masters), through the
same tests."""

from __future__ import annotations

import itertools

import pytest

from mailgw.state.embedded import EmbeddedStore
from mailgw.state.records import AuditEntry, Suspension
from mailgw.state.redis_store import RedisStore

_prefixes = itertools.count()


@pytest.fixture(params=["embedded", "redis", "cluster"])
def stores(request, tmp_path):
    """Two handles on one store, as two gateways (or a gateway and the CLI) have."""
    if request.param == "embedded":
        made = [EmbeddedStore(tmp_path / "state.db") for _ in range(2)]
    else:
        url = request.getfixturevalue("redis_cluster" if request.param == "cluster"
                                      else "redis_server").url
        prefix = f"t{next(_prefixes)}:"
        made = [RedisStore(url, prefix) for _ in range(2)]
    yield made
    for s in made:
        s.close()


def auto(system="mfa", ts=100.0):
    return Suspension(system, ts, "auto", rule="messages_10m", observed=1001, threshold=1000,
                      window=600, evidence={"top_domains": ["example.com"]})


def test_one_active_suspension_per_system_across_handles(stores):
    a, b = stores
    first = a.suspend(auto())
    assert first is not None and first.id is not None
    assert b.suspend(Suspension("mfa", 101.0, "alice", reason="manual")) is None
    assert a.active()["mfa"].rule == "messages_10m"
    assert b.active()["mfa"].evidence == {"top_domains": ["example.com"]}
    assert a.suspend(auto("moj")) is not None
    assert set(b.active()) == {"mfa", "moj"}


def test_lift_ends_it_once_and_records_who_and_why(stores):
    a, b = stores
    a.suspend(auto())
    lifted = b.lift("mfa", "bob", "password reset", 200.0, purge=True)
    assert lifted is not None and lifted.lifted_by == "bob" and lifted.purge
    assert a.lift("mfa", "carol", "again", 201.0) is None
    assert a.active() == {}
    assert a.latest("mfa").lift_reason == "password reset"
    assert a.suspend(auto(ts=300.0)) is not None  # a new suspension after the lift
    history = [(h.action, h.by, h.reason) for h in b.history("mfa")]
    assert history == [("suspended", "auto", "messages_10m"), ("lifted", "bob", "password reset"),
                       ("suspended", "auto", "messages_10m")]


def test_each_notice_is_claimed_exactly_once(stores):
    a, b = stores
    s = a.suspend(auto())
    assert [k for k, _ in b.pending_notices()] == ["suspended"]
    claims = [a.claim_notice(s.id, "suspended"), b.claim_notice(s.id, "suspended")]
    assert sorted(claims) == [False, True]
    assert b.pending_notices() == []
    a.lift("mfa", "bob", "ok", 200.0)
    (kind, record), = a.pending_notices()
    assert kind == "lifted" and record.lifted_by == "bob"
    assert b.claim_notice(record.id, "lifted") and not a.claim_notice(record.id, "lifted")


def test_baselines_round_trip(stores):
    a, b = stores
    a.save_baselines({"mfa": {"messages": {"slots": [1.0, None], "first_hour": 5, "hour": 9,
                                           "count": 3.0}}})
    assert b.load_baselines()["mfa"]["messages"]["slots"] == [1.0, None]


@pytest.fixture(params=["embedded", "redis"])
def store_that_forgets(request, tmp_path, redis_server):
    """A store, and a way to lose everything it holds (a Redis restarted
    empty, a state file replaced by an empty one)."""
    if request.param == "embedded":
        def fresh():
            path = tmp_path / f"state{next(_prefixes)}.db"
            return EmbeddedStore(path)
    else:
        def fresh():
            return RedisStore(redis_server.url, f"t{next(_prefixes)}:")
    made = [fresh()]
    yield made[0], lambda: made.append(fresh()) or made[-1]
    for s in made:
        s.close()


def test_confirm_returns_what_the_store_holds_lifted_or_not(stores):
    a, b = stores
    record = a.suspend(auto())
    assert b.confirm(record, 400.0) == (record, False)
    lifted = b.lift("mfa", "bob", "password reset", 200.0, purge=True)
    assert a.confirm(record, 400.0) == (lifted, False)
    assert a.active() == {}  # a lifted record is not brought back
    assert [h.action for h in a.history("mfa")] == ["suspended", "lifted"]


def test_a_lost_suspension_is_written_back_with_its_id_and_said_so(store_that_forgets):
    old, forget = store_that_forgets
    old.suspend(auto("moj"))
    record = old.suspend(Suspension("mfa", 150.0, "alice", reason="phishing reported",
                                    evidence={"note": "x"}))
    assert record.id == 2
    store = forget()
    assert store.active() == {}
    assert store.confirm(record, 400.0) == (record, True)
    assert store.confirm(record, 400.0) == (record, False)  # once: a second gateway finds it there
    assert store.active() == {"mfa": record}
    assert store.latest("mfa") == record
    (entry,) = store.history()
    assert (entry.system, entry.action, entry.by, entry.reason, entry.details) == (
        "mfa", "restored", "gateway", "the state store lost it", {"suspension": 2})
    assert store.pending_notices() == []  # the owner was told when it was decided
    assert store.suspend(auto("moj")).id == 3  # new ids go on after it
    assert store.lift("mfa", "bob", "done", 300.0).id == 2


def test_a_lost_suspension_whose_id_was_taken_meanwhile_comes_back_under_a_new_one(
        store_that_forgets):
    old, forget = store_that_forgets
    record = old.suspend(auto("mfa"))
    store = forget()
    other = store.suspend(auto("moj"))  # another gateway, before this one wrote mfa back
    assert other.id == record.id
    back, restored = store.confirm(record, 400.0)
    assert restored and back.id == 2 and back.system == "mfa" and back.since == record.since
    assert store.active() == {"moj": other, "mfa": back}


def test_a_lost_suspension_is_not_written_over_a_newer_one(store_that_forgets):
    old, forget = store_that_forgets
    record = old.suspend(auto("mfa"))
    store = forget()
    store.suspend(auto("moj"))
    newer = store.suspend(Suspension("mfa", 500.0, "alice", reason="manual"))
    assert store.confirm(record, 400.0) == (newer, False)


def test_an_entry_with_a_key_is_written_once(stores):
    a, b = stores
    entry = AuditEntry(100.0, "mfa", "purged", "carol", "sent by mistake", {"messages": ["X"]})
    a.record(entry, key="k1")
    b.record(entry, key="k1")  # written again after a crash before its outbox let go of it
    b.record(entry)
    assert [h.action for h in a.history()] == ["purged", "purged"]


def test_history_reads_in_time_order_with_entries_written_late(stores):
    a, b = stores
    a.suspend(auto(ts=100.0))
    a.record(AuditEntry(300.0, "mfa", "held", "auto", None, {}))
    b.record(AuditEntry(200.0, "mfa", "purged", "carol", "late", {}), key="late")
    assert [h.ts for h in a.history("mfa")] == [100.0, 200.0, 300.0]


def restriction(sender="clerk@mfa.gov.kz", ts=120.0):
    return Suspension("mfa", ts, "auto", rule="sender_new_domains_1h", observed=40,
                      threshold=0.05, window=3600, sender=sender)


def test_a_senders_restriction_is_a_subject_of_its_own(stores):
    """One active record per subject: a sender restricted beside its
    system's suspension, each sender once, each lifted on its own."""
    a, b = stores
    clerk = a.suspend(restriction())
    assert clerk is not None and clerk.sender == "clerk@mfa.gov.kz"
    assert b.suspend(restriction(ts=121.0)) is None  # that sender once
    assert b.suspend(restriction("boss@mfa.gov.kz")) is not None
    system = a.suspend(auto(ts=130.0))
    assert system is not None  # the whole system beside its senders
    assert set(b.active()) == {"mfa", "mfa clerk@mfa.gov.kz", "mfa boss@mfa.gov.kz"}
    assert b.latest("mfa", "clerk@mfa.gov.kz") == clerk and b.latest("mfa") == system
    lifted = b.lift("mfa", "bob", "password reset", 200.0, sender="clerk@mfa.gov.kz")
    assert lifted is not None and lifted.id == clerk.id and lifted.lifted_by == "bob"
    assert b.lift("mfa", "bob", "again", 201.0, sender="clerk@mfa.gov.kz") is None
    assert set(a.active()) == {"mfa", "mfa boss@mfa.gov.kz"}  # the system still suspended
    history = [(h.action, h.details.get("sender")) for h in a.history("mfa")]
    assert history == [("restricted", "clerk@mfa.gov.kz"), ("restricted", "boss@mfa.gov.kz"),
                       ("suspended", None), ("unrestricted", "clerk@mfa.gov.kz")]
    kinds = [(k, r.sender) for k, r in a.pending_notices()]
    assert ("suspended", "clerk@mfa.gov.kz") in kinds and ("lifted", "clerk@mfa.gov.kz") in kinds


def test_a_lift_with_a_grace_spares_the_sender_until_it_ends_or_it_is_restricted_again(stores):
    a, b = stores
    clerk, boss = "clerk@mfa.gov.kz", "boss@mfa.gov.kz"
    a.suspend(restriction())
    a.suspend(restriction(boss))
    lifted = b.lift("mfa", "bob", "press release, owner confirmed", 200.0, sender=clerk,
                    grace_until=7400.25)
    assert lifted is not None and lifted.grace_until == 7400.25
    b.lift("mfa", "bob", "fixed", 201.0, sender=boss)  # no grace
    assert list(a.spared(7400.0)) == ["mfa clerk@mfa.gov.kz"]
    assert a.spared(7400.0)["mfa clerk@mfa.gov.kz"].lift_reason == \
        "press release, owner confirmed"
    assert a.spared(7400.25) == {}  # it has run out
    assert a.latest("mfa", clerk).grace_until == 7400.25
    (entry,) = [h for h in a.history("mfa") if h.details.get("sender") == clerk
                and h.action == "unrestricted"]
    assert entry.details["grace_until"] == 7400.25 and entry.by == "bob"
    # restricted again within it: the grace is over
    assert b.suspend(restriction(ts=300.0)) is not None
    assert a.spared(400.0) == {}
    # a later grace of another sender leaves a past one out
    b.suspend(restriction(boss, ts=500.0))
    b.lift("mfa", "bob", "ok", 600.0, sender=boss, grace_until=9000.0)
    assert list(a.spared(8000.0)) == ["mfa boss@mfa.gov.kz"]


def test_a_lost_restriction_is_written_back_as_a_restriction(store_that_forgets):
    old, forget = store_that_forgets
    record = old.suspend(restriction())
    store = forget()
    store.suspend(auto())  # the system's suspension is another subject
    back, restored = store.confirm(record, 400.0)
    assert restored and back.sender == "clerk@mfa.gov.kz" and back.since == record.since
    assert store.confirm(back, 401.0) == (back, False)
    assert set(store.active()) == {"mfa", "mfa clerk@mfa.gov.kz"}


def test_a_state_file_from_before_restrictions_takes_them(tmp_path):
    """A state.db written before senders could be restricted: its records
    read as the system's, and restrictions go in beside them."""
    import sqlite3

    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE suspensions (id INTEGER PRIMARY KEY, system TEXT NOT NULL,
            since REAL NOT NULL, by TEXT NOT NULL, rule TEXT, observed REAL, threshold REAL,
            window REAL, reason TEXT, evidence TEXT NOT NULL DEFAULT '{}', lifted_at REAL,
            lifted_by TEXT, lift_reason TEXT, purge INTEGER NOT NULL DEFAULT 0);
        CREATE UNIQUE INDEX one_active_per_system ON suspensions(system)
            WHERE lifted_at IS NULL;
        INSERT INTO suspensions (system, since, by, reason) VALUES ('mfa', 50, 'alice', 'x');
    """)
    db.close()
    store = EmbeddedStore(path)
    try:
        assert store.active()["mfa"].sender is None
        assert store.suspend(restriction()) is not None
        assert store.suspend(Suspension("mfa", 60.0, "bob", reason="again")) is None
        assert set(store.active()) == {"mfa", "mfa clerk@mfa.gov.kz"}
        # and lifts with a grace (a column it gains)
        assert store.lift("mfa", "bob", "ok", 70.0, sender="clerk@mfa.gov.kz",
                          grace_until=80.0).grace_until == 80.0
        assert list(store.spared(75.0)) == ["mfa clerk@mfa.gov.kz"]
    finally:
        store.close()
