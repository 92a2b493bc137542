"""`mailgw queue` against a running gateway (the request is handed to it and
its scheduler acts at once) and a stopped one (the CLI changes the spool
itself); a suspended system's mail is not released; a second gateway on the
same spool refuses to start; every change is in the audit trail."""

from __future__ import annotations

import json

import pytest

from tests.support.mail import send_as_mfa
from tests.support.process import ServeProcess, free_port
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import BURST_RULE, cli
from tests.test_serve_e2e import write_config


def queued(config) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    out = cli(config, "queue", "list", "--json")
    assert out.returncode == 0, out.stderr
    return {m["id"]: m for m in json.loads(out.stdout)}


def test_release_and_purge_through_a_running_gateway(tmp_path, dest):
    dest.faults.data = "451 4.3.0 not now"
    port = free_port()
    # deferred mail would wait an hour: only a release brings it out sooner
    config = write_config(tmp_path, dest.port, port, retry=("1h", "1h"))
    gw = ServeProcess(config, port).start()
    try:
        ids = [send_as_mfa(port, n)[1].split()[-1] for n in range(2)]
        wait_until(lambda: all(queued(config).get(i, {}).get("attempts") == 1 for i in ids),
                   timeout=10, what="both deferred")
        listing = cli(config, "queue", "list", "--system", "mfa")
        assert all(i in listing.stdout for i in ids) and "queued" in listing.stdout
        shown = cli(config, "queue", "show", ids[0])
        assert "451" in shown.stdout and "Subject: 0" in shown.stdout

        dest.faults.data = None
        out = cli(config, "queue", "release", ids[0], "--reason", "destination fixed")
        assert out.returncode == 0 and f"{ids[0]} released" in out.stdout, out.stderr
        wait_until(lambda: ids[0] in dest.received_ids(), timeout=10, what="the release")
        out = cli(config, "queue", "purge", ids[1], "--reason", "sent by mistake", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["done"] == [{"id": ids[1], "system": "mfa"}]
        assert ids[1] not in queued(config)
        out = cli(config, "queue", "purge", ids[1], "--reason", "again")
        assert out.returncode == 3 and "not held or waiting" in out.stderr
    finally:
        gw.stop()
    assert ids[1] not in dest.received_ids()
    history = json.loads(cli(config, "history", "mfa", "--json").stdout)
    assert [(h["action"], h["reason"], h["details"]["messages"]) for h in history] == [
        ("released", "destination fixed", [ids[0]]), ("purged", "sent by mistake", [ids[1]])]


def test_a_suspended_systems_mail_stays_held_and_is_purged_with_the_gateway_stopped(
        tmp_path, dest):
    dest.faults.data = "451 4.3.0 not now"
    port = free_port()
    config = write_config(tmp_path, dest.port, port, anomaly=BURST_RULE)
    gw = ServeProcess(config, port).start()
    try:
        assert [send_as_mfa(port, n)[0] for n in range(4)] == [250] * 4
        wait_until(lambda: sum(m["state"] == "held" for m in queued(config).values()) == 4,
                   timeout=15, what="held")
        wait_until(lambda: any(m["origin"] == "notice" for m in queued(config).values()),
                   timeout=15, what="the owner notice, deferred like the rest")
        second = ServeProcess(config, free_port())
        with pytest.raises(AssertionError, match="cannot start: another gateway runs on the "
                           "spool"):
            second.start()
        second.stop()
    finally:
        gw.stop()
    out = cli(config, "queue", "release", "--system", "mfa", "--reason", "urgent")
    assert out.returncode == 3 and "mfa is suspended" in out.stderr
    out = cli(config, "queue", "purge", "--system", "mfa", "--reason", "spam")
    assert out.returncode == 0 and out.stdout.count("purged") == 4, out.stderr
    # what is left is the gateway's own notice to the owner, not the system's mail
    assert [m["origin"] for m in queued(config).values()] == ["notice"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "purged" for e in events) == 4
    (entry,) = [h for h in json.loads(cli(config, "history", "mfa", "--json").stdout)
                if h["action"] == "purged"]
    assert entry["by"] and len(entry["details"]["messages"]) == 4


def test_a_request_file_that_is_not_ours_is_dropped_not_retried(tmp_path):
    from mailgw.relay import queue_admin

    control = tmp_path / "control"
    control.mkdir()
    (control / "1.request").write_text("not json")
    (control / "2.request").write_text('{"action": "format-disk"}')
    (control / "3.request").write_text('{"action": "purge", "ids": ["X"], "operator": "a"}')
    # ours in name only: it would purge with no one to answer for it, or fail midway
    (control / "4.request").write_text('{"action": "purge", "ids": ["X"]}')
    (control / "5.request").write_text('{"action": "purge", "ids": "X", "operator": "a"}')
    (taken,) = queue_admin.take_requests(tmp_path)
    assert taken[0].name == "3.request"
    assert sorted(p.name for p in control.iterdir()) == ["3.request"]


def test_set_aside_mail_is_listed_and_a_release_sends_it_with_its_crashes_cleared(tmp_path, dest):
    from mailgw.relay.spool import Meta, Recipient, Spool, new_queue_id

    port = free_port()
    config = write_config(tmp_path, dest.port, port)
    spool = Spool(tmp_path / "spool")
    aside = Meta(id=new_queue_id(), system="mfa", sender="a@mfa.gov.kz",
                 recipients=[Recipient("x@example.com")], size=20, received_at=1.0)
    spool.put(aside, b"Subject: crashed\r\n\r\nbody\r\n")
    spool.claim(aside.id)
    aside.crashes = 5
    spool.set_aside(aside.id, aside)
    (tmp_path / "spool" / "corrupt" / "BROKEN.msg").write_bytes(b"{not json\nbody")

    listing = cli(config, "queue", "list", "--state", "set aside")
    assert aside.id in listing.stdout and "BROKEN" in listing.stdout
    assert "(unreadable metadata)" in listing.stdout
    assert queued(config)[aside.id]["crashes"] == 5
    gw = ServeProcess(config, port).start()
    try:
        out = cli(config, "queue", "release", aside.id, "BROKEN", "--reason", "bug fixed")
        assert out.returncode == 0 and f"{aside.id} released" in out.stdout, out.stderr
        assert "BROKEN not released: its metadata cannot be read" in out.stderr
        wait_until(lambda: any(b"Subject: crashed" in m.data for m in dest.messages),
                   timeout=10, what="the release")
    finally:
        gw.stop()
