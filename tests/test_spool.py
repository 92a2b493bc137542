"""The spool's durability rules, on a real directory."""

from __future__ import annotations

from mailgw.relay.spool import Meta, Recipient, Spool, SpoolError, new_queue_id


def meta() -> Meta:
    return Meta(id=new_queue_id(), system="mfa", sender="a@mfa.gov.kz",
                recipients=[Recipient("x@example.com")], size=5, received_at=1.0)


def test_put_then_recover_finds_the_message(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"hello")
    (found,) = Spool(tmp_path).recover()
    assert found == m and spool.load("queue", m.id) == (m, b"hello")
    assert list(tmp_path.glob("*/*")) == [tmp_path / "queue" / f"{m.id}.msg"]  # one file


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
    assert spool.load("corrupt", m.id)[1] == b"x"  # set aside, not deleted


def test_leftovers_of_unfinished_puts_are_removed(tmp_path):
    spool = Spool(tmp_path)
    (tmp_path / "tmp" / "X.msg").write_bytes(b"{")
    assert spool.recover() == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_unreadable_metadata_is_set_aside(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    (tmp_path / "queue" / f"{m.id}.msg").write_text("{not json\nx")
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
    (tmp_path / "active" / f"{m.id}.msg").write_text("{not json\nx")
    assert Spool(tmp_path).recover() == []
    assert spool.ids("corrupt") == [m.id]
    assert (tmp_path / "corrupt" / f"{m.id}.msg").read_bytes() == b"{not json\nx"


def test_rewrite_leaves_the_message_in_its_new_state_only(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    claimed, data = spool.claim(m.id)
    assert data == b"x"
    claimed.attempts = 1
    spool.rewrite(claimed, "active", "queue")
    assert spool.ids("active") == [] and spool.load("queue", m.id) == (claimed, b"x")


def test_a_crash_inside_rewrite_keeps_the_new_copy_and_counts_no_crash(tmp_path):
    spool = Spool(tmp_path)
    m = meta()
    spool.put(m, b"x")
    claimed, _ = spool.claim(m.id)
    claimed.attempts = 1
    active = (tmp_path / "active" / f"{m.id}.msg").read_bytes()
    spool.rewrite(claimed, "active", "hold")
    (tmp_path / "active" / f"{m.id}.msg").write_bytes(active)  # as if killed before the unlink
    assert Spool(tmp_path).recover() == []
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
    recovered = spool.recover()
    claimed.crashes = 1
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
    assert spool.remove_many([good.id, "gone-already"], "queue") == [None, None]
    assert spool.ids("queue") == [also_good.id]


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
