"""One behaviour, two backends: the embedded SQLite store and the Redis store
(a real redis-server), through the same tests."""

from __future__ import annotations

import itertools

import pytest

from mailgw.state.embedded import EmbeddedStore
from mailgw.state.records import Suspension
from mailgw.state.redis_store import RedisStore

_prefixes = itertools.count()


@pytest.fixture(params=["embedded", "redis"])
def stores(request, tmp_path, redis_server):
    """Two handles on one store, as two gateways (or a gateway and the CLI) have."""
    if request.param == "embedded":
        made = [EmbeddedStore(tmp_path / "state.db") for _ in range(2)]
    else:
        prefix = f"t{next(_prefixes)}:"
        made = [RedisStore(redis_server.url, prefix) for _ in range(2)]
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
