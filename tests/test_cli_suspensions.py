"""The operator CLI against a running and a stopped gateway, on the embedded
and the Redis state backends:
suspend and lift take effect on the running gateway within a second or two,
and every change is in the audit trail with operator and reason."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys

import pytest

from tests.support.mail import send, send_as_mfa
from tests.support.process import ServeProcess, free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.test_serve_e2e import write_config


def cli(config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgw", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def mail_code(port: int, sender: str = "a@mfa.gov.kz") -> int:
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.ehlo("mail.mfa.gov.kz")
        return c.mail(sender)[0]


@pytest.fixture(params=["embedded", "redis"])
def state(request) -> str:
    """The [state] table: the embedded store, or a real Redis."""
    if request.param == "embedded":
        return ""
    url = request.getfixturevalue("redis_server").url
    return f'[state]\nbackend = "redis"\nredis_url = "{url}"\n' \
           f'redis_prefix = "{request.node.name}:"\n'


def test_suspend_and_lift_reach_the_running_gateway(tmp_path, dest, state):
    port = free_port()
    config = write_config(tmp_path, dest.port, port, extra=state)
    gw = ServeProcess(config, port).start()
    try:
        assert mail_code(port) == 250
        out = cli(config, "suspend", "mfa", "--reason", "phishing reported", "--operator", "alice")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: mail_code(port) == 450, timeout=5, what="450 after suspend")
        assert cli(config, "suspend", "mfa", "--reason", "again").returncode == 3
        status = json.loads(cli(config, "status", "mfa", "--json").stdout)
        assert status[0]["state"] == "suspended" and status[0]["suspension"]["by"] == "alice"
        assert cli(config, "lift", "mfa", "--reason", "password reset", "--operator",
                   "bob").returncode == 0
        wait_until(lambda: mail_code(port) == 250, timeout=5, what="250 after lift")
    finally:
        gw.stop()
    history = json.loads(cli(config, "history", "mfa", "--json").stdout)
    assert [(h["action"], h["by"], h["reason"]) for h in history] == [
        ("suspended", "alice", "phishing reported"), ("lifted", "bob", "password reset")]


def test_suspension_made_while_stopped_holds_from_the_first_connection(tmp_path, dest, state):
    port = free_port()
    config = write_config(tmp_path, dest.port, port, extra=state)
    assert cli(config, "suspend", "mfa", "--reason", "audit").returncode == 0
    gw = ServeProcess(config, port).start()
    try:
        assert mail_code(port) == 450
        # the owner is told, although no gateway ran when it was decided
        wait_until(lambda: any(m.rcpt_tos == ["postmaster@mfa.gov.kz"] for m in dest.messages),
                   timeout=10, what="the suspension notice")
        assert cli(config, "lift", "mfa", "--reason", "audit done").returncode == 0
        wait_until(lambda: sum(m.rcpt_tos == ["postmaster@mfa.gov.kz"]
                               for m in dest.messages) == 2, timeout=10, what="the lift notice")
    finally:
        gw.stop()
    notices = [m for m in dest.messages if m.rcpt_tos == ["postmaster@mfa.gov.kz"]]
    assert len(notices) == 2  # once each, not again at every refresh


def test_unknown_system_and_missing_reason_are_errors(tmp_path, dest):
    config = write_config(tmp_path, dest.port, free_port())
    assert cli(config, "suspend", "nosuch", "--reason", "x").returncode == 2
    assert cli(config, "lift", "mfa").returncode == 2  # --reason is required
    assert cli(config, "lift", "mfa", "--reason", "x").returncode == 3  # not suspended


# "more than 3 messages in 10 minutes": the 4th message crosses it
BURST_RULE = """[[anomaly.rules]]
name = "messages_10m"
kind = "ceiling"
metric = "messages"
window = "10m"
threshold = 3
"""


def test_burst_suspends_held_mail_survives_restart_and_purge_removes_it(tmp_path, dest):
    dest.faults.data = "451 4.3.0 not now"  # keep the burst in the spool
    port = free_port()
    config = write_config(tmp_path, dest.port, port, anomaly=BURST_RULE)
    hold = tmp_path / "spool" / "hold"
    gw = ServeProcess(config, port).start()
    try:
        assert [send_as_mfa(port, n)[0] for n in range(4)] == [250] * 4
        assert send_as_mfa(port, 9)[0] == 450
        wait_until(lambda: len(list(hold.glob("*.msg"))) >= 4, timeout=15, what="held")
        assert gw.terminate() == 0
        dest.faults.data = None
        gw.start()  # held mail stays held across the restart, and 450 goes on
        assert send_as_mfa(port, 10)[0] == 450
        assert len(list(hold.glob("*.msg"))) >= 4
        assert not [m for m in dest.messages if m.mail_from == "a@mfa.gov.kz"]
        held = [p.stem for p in hold.glob("*.msg")]
        out = cli(config, "lift", "mfa", "--reason", "spam confirmed", "--purge")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: not list(hold.glob("*.msg")), timeout=5, what="purged")
        wait_until(lambda: send_as_mfa(port, 11)[0] == 250, timeout=5)
    finally:
        gw.stop()
    assert not set(held) & dest.received_ids()  # purged, never delivered
    assert not any((tmp_path / "spool" / "messages" / f"{i}.eml").exists() for i in held)


def test_a_sender_restricted_and_lifted_with_purge_while_the_gateway_is_stopped(
        tmp_path, dest, state):
    """`suspend --sender` and `lift --sender --purge` from the CLI: the
    running gateway refuses that sender alone and holds its mail; lifted with
    --purge while no gateway runs, that sender's held mail is deleted at the
    next start, while the other sender's mail goes out."""
    dest.faults.data = "451 4.3.0 not now"  # keep mail in the spool
    port = free_port()
    config = write_config(tmp_path, dest.port, port, extra=state)
    hold = tmp_path / "spool" / "hold"
    gw = ServeProcess(config, port).start()
    try:
        assert [send(port, n, "Clerk@MFA.gov.kz")[0] for n in range(2)] == [250, 250]
        out = cli(config, "suspend", "mfa", "--sender", "Clerk@mfa.GOV.kz", "--reason",
                  "phishing reported", "--operator", "alice")
        assert out.returncode == 0, out.stderr
        assert "sender Clerk@mfa.gov.kz of mfa restricted by alice" in out.stdout
        wait_until(lambda: mail_code(port, "Clerk@mfa.gov.kz") == 450, timeout=5,
                   what="450 for the restricted sender")
        assert send(port, 4, "boss@mfa.gov.kz")[0] == 250
        wait_until(lambda: len(list(hold.glob("*.msg"))) == 2, timeout=15, what="held")
        status = json.loads(cli(config, "status", "mfa", "--json").stdout)[0]
        assert status["state"] == "active"
        assert [r["sender"] for r in status["restricted_senders"]] == ["Clerk@mfa.gov.kz"]
        assert "sender Clerk@mfa.gov.kz  restricted" in cli(config, "status").stdout
        assert gw.terminate() == 0
    finally:
        gw.stop()
    out = cli(config, "queue", "release", "--system", "mfa", "--reason", "urgent")
    # the other sender's deferred mail is retried now, the restricted one's stays
    assert out.stderr.count("sender Clerk@mfa.gov.kz of mfa is restricted; lift it") == 2
    out = cli(config, "lift", "mfa", "--sender", "Clerk@mfa.gov.kz", "--reason",
              "spam confirmed", "--purge")
    assert out.returncode == 0, out.stderr
    assert cli(config, "lift", "mfa", "--sender", "Clerk@mfa.gov.kz",
               "--reason", "again").returncode == 3
    held = {p.stem for p in hold.glob("*.msg")}
    dest.faults.data = None
    gw.start()
    try:
        wait_until(lambda: not list(hold.glob("*.msg")), timeout=10, what="purged at start")
        wait_until(lambda: [m for m in dest.messages if m.mail_from == "boss@mfa.gov.kz"],
                   timeout=10, what="the other sender's mail delivered")
    finally:
        gw.stop()
    assert not held & dest.received_ids()
    history = cli(config, "history", "mfa").stdout
    assert "restricted" in history and "unrestricted" in history and "Clerk@mfa.gov.kz" in history


# a sender's "more than 3 messages in 10 minutes": its 4th crosses it
SENDER_BURST_RULE = BURST_RULE.replace('"messages_10m"', '"sender_messages_10m"') + \
    'scope = "sender"\n'


def test_a_sender_lifted_with_a_grace_is_spared_across_a_restart(tmp_path, dest, state):
    """A press office's mailing restricted by a rule, the owner confirms it:
    `lift --sender --grace` lets the rest of it (and its server's retries)
    through unjudged, also after the gateway is killed and started again;
    restricted again by hand, the grace is over and a plain lift judges the
    sender again."""
    port = free_port()
    config = write_config(tmp_path, dest.port, port, anomaly=SENDER_BURST_RULE, extra=state)
    press = "press@mfa.gov.kz"
    gw = ServeProcess(config, port).start()
    try:
        assert [send(port, n, press)[0] for n in range(4)] == [250] * 4
        wait_until(lambda: mail_code(port, press) == 450, timeout=5, what="restricted")
        assert cli(config, "lift", "mfa", "--grace", "1h", "--reason", "x").returncode == 2
        too_long = cli(config, "lift", "mfa", "--sender", press, "--grace", "3d",
                       "--reason", "x")
        assert too_long.returncode == 2 and "at most 1d" in too_long.stderr
        out = cli(config, "lift", "mfa", "--sender", press, "--grace", "2h", "--reason",
                  "press release, the owner confirmed", "--operator", "bob")
        assert out.returncode == 0, out.stderr
        assert "spared until " in out.stdout
        wait_until(lambda: mail_code(port, press) == 250, timeout=5, what="lifted")
        assert [send(port, n, press)[0] for n in range(10, 18)] == [250] * 8
        status = json.loads(cli(config, "status", "mfa", "--json").stdout)[0]
        (spared,) = status["spared_senders"]
        assert spared["sender"] == press and spared["lifted_by"] == "bob"
        assert 7100 < spared["grace_until"] - spared["lifted_at"] <= 7200
        assert "sender press@mfa.gov.kz  spared" in cli(config, "status").stdout
        gw.kill()
        gw.start()
        assert [send(port, n, press)[0] for n in range(20, 26)] == [250] * 6
        assert cli(config, "suspend", "mfa", "--sender", press, "--reason",
                   "complaints came in").returncode == 0
        wait_until(lambda: mail_code(port, press) == 450, timeout=5, what="restricted again")
        assert json.loads(cli(config, "status", "mfa", "--json").stdout)[0][
            "spared_senders"] == []
        assert cli(config, "lift", "mfa", "--sender", press, "--reason", "ok").returncode == 0
        wait_until(lambda: mail_code(port, press) == 250, timeout=5, what="lifted again")
        assert [send(port, n, press)[0] for n in range(30, 34)] == [250] * 4
        wait_until(lambda: mail_code(port, press) == 450, timeout=5, what="judged again")
        assert gw.terminate() == 0  # the event log written out
    finally:
        gw.stop()
    log = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    lifts = [e for e in log if e["event"] == "unrestricted"]
    assert [round(e["grace_until"] - e["ts"], -2) if "grace_until" in e else None
            for e in lifts] == [7200, None]


# every verb that needs the state store, with Redis not there
STORE_VERBS = [
    ["status"],
    ["status", "mfa", "--json"],
    ["suspend", "mfa", "--reason", "phishing reported"],
    ["lift", "mfa", "--reason", "password reset"],
    ["history", "--json"],
    ["queue", "release", "--system", "mfa", "--reason", "destination fixed"],
    ["queue", "purge", "--system", "mfa", "--reason", "sent by mistake"],
    ["dnsbl"],
]


@pytest.mark.parametrize("verb", STORE_VERBS, ids=" ".join)
def test_a_verb_with_the_store_down_says_so_in_one_line_and_exits_5(tmp_path, verb):
    nothing_there = free_port()
    state = f'[state]\nbackend = "redis"\n' \
            f'redis_url = "redis://:s3cret@127.0.0.1:{nothing_there}/0"\n' \
            f'[dnsbl]\nzones = ["bl.test"]\nresolver = ["127.0.0.1:{free_port()}"]\n'
    config = write_config(tmp_path, free_port(), free_port(), extra=state,
                          delivery='source_addresses = ["127.0.0.2"]')
    out = cli(config, *verb)
    assert out.returncode == 5, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert f"redis://:***@127.0.0.1:{nothing_there}/0" in out.stderr  # named, password masked
    assert "s3cret" not in out.stderr


def test_queue_release_with_no_gateway_and_the_store_down_releases_nothing(tmp_path, dest):
    """Alone, the CLI cannot tell whether the system is suspended: it does nothing."""
    dest.faults.data = "451 4.3.0 not now"
    port = free_port()
    redis = RedisServer().start()
    config = write_config(tmp_path, dest.port, port, retry=("1h", "1h"),
                          extra=f'[state]\nbackend = "redis"\nredis_url = "{redis.url}"\n')
    gw = ServeProcess(config, port).start()
    try:
        assert send_as_mfa(port, 0)[0] == 250
        wait_until(lambda: json.loads(cli(config, "queue", "list", "--json").stdout)[0]
                   ["attempts"] == 1, timeout=10, what="the message deferred")
        assert gw.terminate() == 0
        queued = json.loads(cli(config, "queue", "list", "--json").stdout)
        redis.stop()
        out = cli(config, "queue", "release", "--system", "mfa", "--reason", "retry now")
        assert out.returncode == 5, out.stderr
        assert json.loads(cli(config, "queue", "list", "--json").stdout) == queued
    finally:
        gw.stop()
        redis.stop()
