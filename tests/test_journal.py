"""The gateway's journal beside its spool: the suspensions it knows to be in
force, kept across a restart, and the audit entries that wait for the state
store, written to it in order, each once, and let go only when it took them."""

from __future__ import annotations

import pytest
import redis

from mailgw.state.journal import Journal
from mailgw.state.records import AuditEntry, Suspension
from mailgw.state.redis_store import RedisStore
from tests.support.process import free_port


def test_the_suspensions_known_are_kept_across_a_restart(tmp_path):
    spool = tmp_path / "spool"
    known = {"mfa": Suspension("mfa", 100.0, "auto", rule="messages_10m", id=7,
                               evidence={"counts": {"messages/600s": 4}}),
             "moj": Suspension("moj", 110.0, "auto", rule="messages_10m")}  # not in the store yet
    journal = Journal(spool)
    journal.keep(known)
    journal.close()
    journal = Journal(spool)
    assert journal.known() == known
    journal.keep({"mfa": known["mfa"]})  # moj lifted
    assert journal.known() == {"mfa": known["mfa"]}
    journal.close()


def test_the_outbox_waits_for_the_store_then_writes_each_entry_once_in_order(tmp_path,
                                                                            redis_server):
    gateway, cli = Journal(tmp_path), Journal(tmp_path)  # both sides of one spool queue into it
    for n in range(3):
        (gateway if n % 2 else cli).queue(
            AuditEntry(100.0 + n, "mfa", "held", "auto", None, {"queue_id": f"Q{n}"}))
    down = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(redis.ConnectionError):
        gateway.deliver(down)
    store = RedisStore(redis_server.url, "journal:")
    assert gateway.deliver(store) == 3  # none was let go while the store was down
    assert gateway.deliver(store) == 0 and cli.deliver(store) == 0
    assert [h.details["queue_id"] for h in store.history()] == ["Q0", "Q1", "Q2"]
    for handle in (gateway, cli, down, store):
        handle.close()
