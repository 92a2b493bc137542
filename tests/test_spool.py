"""The spool's durability rules, on a real directory."""

from __future__ import annotations

from mailgw.relay.spool import Meta, Recipient, Spool, new_queue_id


def meta() -> Meta:
    return Meta(id=new_queue_id(), system="mfa", sender="a@mfa.gov.kz",
                recipients=[Recipient("x@example.com")], size=5, received_at=1.0)


def test_put_then_recover_finds_the_message(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"hello")
    (found,) = Spool(tmp_path).recover()
    assert found.id == m.id and spool.read_data(m.id) == b"hello"


def test_message_claimed_by_a_dead_process_returns_to_the_queue_with_a_crash_counted(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    spool.claim(m.id)
    (found,) = Spool(tmp_path).recover()
    assert found.crashes == 1 and spool.ids("active") == []


def test_message_that_crashed_delivery_max_times_is_set_aside(tmp_path):
    spool = Spool(tmp_path, max_crashes=3)
    m = meta()
    spool.put(m, b"x")
    for _ in range(3):
        spool.claim(m.id)
        waiting = Spool(tmp_path, max_crashes=3).recover()
    assert waiting == []
    assert spool.ids("corrupt") == [m.id]
    assert spool.read_data(m.id) == b"x"  # set aside, not deleted


def test_leftovers_of_unfinished_puts_are_removed(tmp_path):
    spool = Spool(tmp_path)
    (tmp_path / "messages" / "ORPHAN.eml").write_bytes(b"never answered 250")
    (tmp_path / "tmp" / "X.json").write_bytes(b"{")
    assert spool.recover() == []
    assert list((tmp_path / "messages").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_unreadable_metadata_is_set_aside(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    (tmp_path / "queue" / f"{m.id}.json").write_text("{not json")
    assert spool.recover() == []
    assert spool.ids("corrupt") == [m.id]


def test_queue_ids_are_unique_and_time_ordered():
    ids = [new_queue_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)


def test_unreadable_metadata_of_a_claimed_message_is_set_aside_not_fatal(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    spool.claim(m.id)
    (tmp_path / "active" / f"{m.id}.json").write_text("{not json")
    assert Spool(tmp_path).recover() == []
    assert spool.ids("corrupt") == [m.id] and spool.read_data(m.id) == b"x"


def test_rewrite_leaves_the_message_in_its_new_state_only(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    claimed = spool.claim(m.id)
    claimed.attempts = 1
    spool.rewrite(claimed, "active", "queue")
    assert spool.ids("active") == [] and spool.read("queue", m.id).attempts == 1
