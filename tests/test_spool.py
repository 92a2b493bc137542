"""The spool's durability rules, on a real directory."""

from __future__ import annotations

import os

from mailgw.relay import spool as spool_mod
from mailgw.relay.spool import Meta, Recipient, Spool, SpoolError, new_queue_id


def meta() -> Meta:
    return Meta(id=new_queue_id(), system="mfa", sender="a@mfa.gov.kz",
                recipients=[Recipient("x@example.com")], size=5, received_at=1.0)


def test_put_then_recover_finds_the_message(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"hello")
    (found,) = Spool(tmp_path).recover().waiting
    assert found == m and spool.load("queue", m.id) == (m, b"hello")
    assert list(tmp_path.glob("*/*")) == [tmp_path / "queue" / f"{m.id}.msg"]  # one file


def test_message_claimed_but_not_being_sent_when_the_process_died_is_queued_uncounted(tmp_path):
    spool = Spool(tmp_path)
    spool.recover()
    m = meta()
    spool.put(m, b"x")
    spool.claim(m.id)  # waiting for a connection to a slow next hop
    (found,) = Spool(tmp_path).recover().waiting
    assert found.crashes == 0 and spool.ids("active") == []


def test_message_whose_transaction_was_under_way_when_the_process_died_counts_a_crash(tmp_path):
    spool = Spool(tmp_path)
    spool.recover()
    sent, sending = meta(), meta()
    for m in (sent, sending):
        spool.put(m, b"x")
        spool.claim(m.id)
        spool.attempt_begins(m.id)
    spool.attempt_ends(sent.id)  # its transaction ended; it waits to be settled
    recovered = Spool(tmp_path).recover()
    assert {m.id: m.crashes for m in recovered.waiting} == {sent.id: 0, sending.id: 1}
    assert recovered.set_aside == []


def test_message_that_crashed_delivery_max_times_is_set_aside_and_reported(tmp_path):
    spool = Spool(tmp_path, max_crashes=3)
    spool.recover()
    m = meta()
    spool.put(m, b"x")
    for _ in range(3):
        spool.claim(m.id)
        spool.attempt_begins(m.id)
        recovered = Spool(tmp_path, max_crashes=3).recover()
    assert recovered.waiting == []
    (aside,) = recovered.set_aside
    assert aside.id == m.id and aside.meta is not None and aside.meta.crashes == 3
    assert "died during 3" in aside.why
    assert spool.ids("corrupt") == [m.id]
    assert spool.load("corrupt", m.id)[1] == b"x"  # set aside, not deleted


def test_restarts_alone_never_set_a_message_aside(tmp_path):
    spool = Spool(tmp_path, max_crashes=2)
    spool.recover()
    m = meta()
    spool.put(m, b"x")
    for _ in range(10):
        spool.claim(m.id)
        recovered = Spool(tmp_path, max_crashes=2).recover()
    assert [w.id for w in recovered.waiting] == [m.id] and spool.ids("corrupt") == []


def test_leftovers_of_unfinished_puts_are_removed(tmp_path):
    spool = Spool(tmp_path)
    (tmp_path / "tmp" / "X.msg").write_bytes(b"{")
    assert spool.recover().waiting == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_unreadable_metadata_is_set_aside_and_reported(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    (tmp_path / "queue" / f"{m.id}.msg").write_text("{not json\nx")
    recovered = spool.recover()
    assert recovered.waiting == [] and [a.id for a in recovered.set_aside] == [m.id]
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
    (tmp_path / "active" / f"{m.id}.msg").write_text("{not json\nx")
    assert Spool(tmp_path).recover().waiting == []
    assert spool.ids("corrupt") == [m.id]
    assert (tmp_path / "corrupt" / f"{m.id}.msg").read_bytes() == b"{not json\nx"


def test_a_deferral_appends_its_update_and_leaves_the_message_bytes_alone(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    m.recipients.append(Recipient("y@example.org"))
    body = b"x" * 10000
    spool.put(m, body)
    claimed, data = spool.claim(m.id)
    assert data == body
    size = os.path.getsize(tmp_path / "active" / f"{m.id}.msg")
    claimed.attempts, claimed.next_try = 1, 99.0
    claimed.recipients[1].state, claimed.recipients[1].code = "delivered", 250
    claimed.recipients[0].code, claimed.recipients[0].response = 451, "451 4.7.1 try later"
    spool.defer(claimed)
    assert spool.ids("active") == [] and spool.load("queue", m.id) == (claimed, body)
    assert spool.read("queue", m.id) == claimed
    assert os.path.getsize(tmp_path / "queue" / f"{m.id}.msg") - size < 200  # a record, not a copy


def test_an_update_record_cut_short_by_a_crash_is_skipped(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"body\r\n")
    claimed, _ = spool.claim(m.id)
    claimed.attempts = 1
    spool.defer(claimed)
    path = tmp_path / "queue" / f"{m.id}.msg"
    whole = path.read_bytes()
    claimed, _ = spool.claim(m.id)
    claimed.attempts = 2
    spool.defer(claimed)
    path.write_bytes(path.read_bytes()[:-5])  # the second record torn
    assert spool.load("queue", m.id)[0].attempts == 1
    claimed, _ = spool.claim(m.id)
    claimed.attempts = 3  # a later record after the torn one still counts
    spool.defer(claimed)
    assert spool.load("queue", m.id) == (claimed, b"body\r\n")
    assert len(path.read_bytes()) > len(whole)


def test_a_file_of_the_earlier_one_file_layout_reads_whole(tmp_path):
    """Before update records, everything after the first line was the message."""
    spool = Spool(tmp_path)
    m = meta()
    (tmp_path / "queue" / f"{m.id}.msg").write_bytes(m.to_json() + b"\nbody\r\n")
    assert spool.load("queue", m.id) == (m, b"body\r\n")
    claimed, data = spool.claim(m.id)
    claimed.attempts = 1
    spool.defer(claimed, data)
    assert spool.load("queue", m.id) == (claimed, b"body\r\n")


def test_piled_up_updates_are_compacted_into_a_fresh_file(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_mod, "COMPACT_AT", 2000)
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"body\r\n")
    for n in range(1, 40):
        claimed, data = spool.claim(m.id)
        claimed.attempts = n
        claimed.recipients[0].response = f"451 try again in {n} minutes"
        spool.defer(claimed, data)
    assert spool.load("queue", m.id) == (claimed, b"body\r\n")
    assert os.path.getsize(tmp_path / "queue" / f"{m.id}.msg") < 2000 + 200


def test_a_copy_left_in_two_states_by_an_earlier_version_keeps_the_newer_one(tmp_path):
    """Earlier versions changed state by writing the new copy before
    unlinking the old: a crash in between left both."""
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    claimed, _ = spool.claim(m.id)
    older = (tmp_path / "active" / f"{m.id}.msg").read_bytes()
    claimed.attempts = 1
    spool.defer(claimed)
    spool.claim(m.id)
    spool.hold(m.id)
    (tmp_path / "active" / f"{m.id}.msg").write_bytes(older)
    assert Spool(tmp_path).recover().waiting == []
    assert spool.ids("active") == [] and spool.ids("queue") == []
    assert spool.load("hold", m.id) == (claimed, b"x")


def test_a_spool_of_the_two_file_layout_is_upgraded_in_place(tmp_path):
    """Earlier versions kept messages/ID.eml plus <state>/ID.json."""
    waiting, held, claimed, finished = meta(), meta(), meta(), meta()
    for d in ("messages", "queue", "hold", "active"):
        (tmp_path / d).mkdir()
    for m, state in ((waiting, "queue"), (held, "hold"), (claimed, "active")):
        (tmp_path / state / f"{m.id}.json").write_bytes(m.to_json())
        (tmp_path / "messages" / f"{m.id}.eml").write_bytes(f"body of {m.id}\r\n".encode())
    (tmp_path / "messages" / f"{finished.id}.eml").write_bytes(b"delivered, metadata removed")
    spool = Spool(tmp_path)
    recovered = spool.recover().waiting
    assert sorted(m.id for m in recovered) == sorted([waiting.id, claimed.id])
    assert not (tmp_path / "messages").exists()
    assert list(tmp_path.glob("*/*.json")) == []
    for m, state in ((waiting, "queue"), (held, "hold"), (claimed, "queue")):
        assert spool.load(state, m.id) == (m, f"body of {m.id}\r\n".encode())


def test_a_batch_stores_what_it_can_and_names_what_it_cannot(tmp_path):
    spool = Spool(tmp_path)
    good, bad, also_good = meta(), meta(), meta()
    bad.id = "no/such/dir"  # its temporary file cannot be created
    errors = spool.put_many([(good, b"1"), (bad, b"2"), (also_good, b"3")])
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], SpoolError) and "no/such/dir" in str(errors[1])
    assert spool.ids("queue") == sorted([good.id, also_good.id])
    assert list((tmp_path / "tmp").iterdir()) == []
    spool.claim(good.id)
    assert spool.ack_many([good.id, "gone-already"]) == [None, None]
    assert spool.ids("queue") == [also_good.id] and spool.ids("active") == []


def test_a_message_whose_metadata_cannot_be_written_fails_alone_in_its_batch(tmp_path):
    spool = Spool(tmp_path)
    good, odd = meta(), meta()
    odd.sender = "a\udc80@mfa.gov.kz"  # a lone surrogate: not encodable as UTF-8
    errors = spool.put_many([(odd, b"1"), (good, b"2")])
    assert isinstance(errors[0], SpoolError) and errors[1] is None
    assert spool.ids("queue") == [good.id] and list((tmp_path / "tmp").iterdir()) == []


def test_metadata_with_newlines_and_non_ascii_stays_on_its_one_line(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    m.recipients[0].response = "451-first line\n451 second\u2028line, Қазақстан"
    spool.put(m, b"body\r\n")
    assert spool.load("queue", m.id) == (m, b"body\r\n")
