"""The operator CLI's finish: the hashing verbs print what goes into the
config, read-only verbs never create state, `dnsbl` tells "clean" from "not
checked", `history` and `status` treat an unknown system alike, `status`
shows the held mail."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib

import pytest

from mailgw import config, hashing
from mailgw.state.embedded import EmbeddedStore
from mailgw.state.records import Suspension
from tests.support.process import free_port
from tests.support.rbldnsd import Rbldnsd
from tests.test_cli_suspensions import BURST_RULE, cli
from tests.test_serve_e2e import write_config


def mailgw(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailgw", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_hash_token_prints_the_systems_key_and_the_token_apart(tmp_path):
    out = mailgw("hash-token")
    assert out.returncode == 0, out.stderr
    key = tomllib.loads(out.stdout)["status_token_hash"]
    token = out.stderr.rsplit(": ", 1)[1].strip()  # for the mail admins, not for the file
    assert token not in out.stdout and key == hashing.hash_token(token)
    config_path = write_config(tmp_path, free_port(), free_port())
    config_path.write_text(config_path.read_text().replace(
        'sender_domains = ["mfa.gov.kz"]\n', 'sender_domains = ["mfa.gov.kz"]\n' + out.stdout))
    assert config.load(config_path).systems[0].status_token_hash == key  # it fits


def test_hash_token_for_an_operator_prints_the_whole_table(tmp_path):
    out = mailgw("hash-token", "--operator", "alice", "--token", "alice-token-0123456789")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    config_path = write_config(tmp_path, free_port(), free_port())
    config_path.write_text(config_path.read_text() + "\n" + out.stdout)
    (operator,) = config.load(config_path).http.operator_tokens
    assert (operator.name, operator.token_hash) == (
        "alice", hashing.hash_token("alice-token-0123456789"))


def test_hash_password_prints_its_key():
    out = mailgw("hash-password", "--password", "correct horse")
    assert out.returncode == 0, out.stderr
    stored = tomllib.loads(out.stdout)["password_hash"]
    assert hashing.verify_password("correct horse", stored)


READ_ONLY = [["status"], ["status", "mfa", "--json"], ["history"], ["history", "mfa"],
             ["queue", "list"], ["queue", "show", "0000000000000000000"], ["check-config"]]


@pytest.mark.parametrize("verb", READ_ONLY, ids=" ".join)
def test_a_read_only_verb_creates_no_state_where_there_is_none(tmp_path, verb):
    config_path = write_config(tmp_path, free_port(), free_port())
    out = cli(config_path, *verb)
    assert out.returncode in (0, 2), out.stderr  # queue show: no such message
    assert not (tmp_path / "state.db").exists() and not (tmp_path / "spool").exists()
    if verb[0] in ("status", "history"):
        assert "no state yet" in out.stderr
    if verb[0] == "status":
        assert "active" in out.stdout


def test_dnsbl_tells_clean_from_listed_from_not_checked(tmp_path):
    lists = Rbldnsd().start()
    try:
        def dnsbl(resolver: str) -> subprocess.CompletedProcess[str]:
            config_path = write_config(
                tmp_path, free_port(), free_port(), delivery='source_addresses = ["127.0.0.2"]',
                extra=f'[dnsbl]\nzones = ["{lists.zone}"]\nresolver = ["{resolver}"]\n'
                      'timeout = "0.5s"\n')
            return cli(config_path, "dnsbl")

        clean = dnsbl(f"127.0.0.1:{lists.port}")
        lists.list("127.0.0.2")
        listed = dnsbl(f"127.0.0.1:{lists.port}")
        unchecked = dnsbl(f"127.0.0.1:{free_port()}")  # no server answers there
    finally:
        lists.stop()
    assert (clean.returncode, listed.returncode, unchecked.returncode) == (0, 4, 6)
    assert "error: 1 lookup of 1 failed: not checked" in unchecked.stderr
    assert not (tmp_path / "state.db").exists()  # it reads what was recorded, if anything


def test_history_of_an_unknown_system_exits_2_like_status(tmp_path):
    config_path = write_config(tmp_path, free_port(), free_port())
    for verb in ("status", "history"):
        out = cli(config_path, verb, "nosuch")
        assert out.returncode == 2 and "no system 'nosuch'" in out.stderr, (verb, out)


def test_status_shows_each_systems_held_mail(tmp_path, dest):
    from tests.support.mail import send_as_mfa
    from tests.support.process import ServeProcess
    from tests.support.waiting import wait_until

    dest.faults.data = "451 4.3.0 not now"  # keep the burst in the spool
    port = free_port()
    config_path = write_config(tmp_path, dest.port, port, anomaly=BURST_RULE)
    gw = ServeProcess(config_path, port).start()
    try:
        for n in range(4):
            send_as_mfa(port, n)
        wait_until(lambda: len(list((tmp_path / "spool" / "hold").glob("*.msg"))) == 4,
                   timeout=15, what="the burst held")
    finally:
        gw.terminate()
    (row,) = json.loads(cli(config_path, "status", "--json").stdout)
    assert (row["state"], row["held"]) == ("suspended", 4)
    header, line = cli(config_path, "status").stdout.splitlines()
    assert header.split()[:3] == ["SYSTEM", "STATE", "HELD"]
    assert line.split()[:3] == ["mfa", "suspended", "4"]
    assert "4 messages in 10 min, limit 3 (rule messages_10m)" in line  # why, in figures


def test_status_of_a_system_suspended_by_hand_reads_an_existing_state(tmp_path):
    config_path = write_config(tmp_path, free_port(), free_port())
    store = EmbeddedStore(tmp_path / "state.db")
    store.suspend(Suspension("mfa", time.time(), "alice", reason="phishing reported"))
    store.close()
    out = cli(config_path, "status")
    assert out.returncode == 0 and "no state yet" not in out.stderr
    assert out.stdout.splitlines()[1].split()[:3] == ["mfa", "suspended", "0"]
