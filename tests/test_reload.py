"""SIGHUP reloads the config of a running `mailgw serve`: a connected system
added to the file relays at once, with no restart, and a system's own
figures for a rule take effect; a file that does not load changes nothing;
the reload is in the audit trail."""

from __future__ import annotations

import json
import signal
import smtplib

from tests.support.mail import send_as_mfa
from tests.support.process import ServeProcess, free_port
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import BURST_RULE, cli, mail_code
from tests.test_serve_e2e import write_config

EDU = """
[[systems]]
id = "edu"
name = "Ministry of Education"
owners = ["postmaster@edu.gov.kz"]
networks = ["127.0.0.2/32"]
sender_domains = ["edu.gov.kz"]
"""


def rcpt_code_from_edu(port: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.2", 0)) as c:
        c.ehlo("mail.edu.gov.kz")
        code = c.mail("a@edu.gov.kz")[0]
        return code if code != 250 else c.rcpt("someone@example.com")[0]


def test_sighup_takes_in_a_new_system_and_ignores_a_broken_file(tmp_path, dest):
    port = free_port()
    config = write_config(tmp_path, dest.port, port)
    gw = ServeProcess(config, port).start()
    try:
        assert rcpt_code_from_edu(port) >= 500  # not a connected system yet
        original = config.read_text()
        config.write_text(original + "\n[[systems]\nbroken")
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config not reloaded" in gw.log.read_text(), timeout=5)
        config.write_text(original + EDU)
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: rcpt_code_from_edu(port) == 250, timeout=5, what="edu relaying")
    finally:
        gw.stop()
    (entry,) = [h for h in json.loads(cli(config, "history", "--json").stdout)
                if h["action"] == "config_reloaded"]
    assert entry["details"]["added"] == ["edu"] and entry["details"]["need_restart"] == []


def test_new_operator_tokens_are_taken_in_at_once_and_need_no_restart(tmp_path, dest):
    from mailgw.hashing import hash_token

    token = '[[http.operator_tokens]]\nname = "alice"\ntoken_hash = "{}"\n'
    port = free_port()
    config = write_config(tmp_path, dest.port, port, extra=token.format(hash_token("one")))
    gw = ServeProcess(config, port).start()
    try:
        config.write_text(config.read_text().replace(hash_token("one"), hash_token("two")))
        for n in (1, 2):
            gw.proc.send_signal(signal.SIGHUP)
            wait_until(lambda n=n: gw.log.read_text().count("config reloaded") == n, timeout=5)
    finally:
        gw.stop()
    assert "take effect at restart" not in gw.log.read_text()
    entries = [h for h in json.loads(cli(config, "history", "--json").stdout)
               if h["action"] == "config_reloaded"]
    assert [e["details"]["need_restart"] for e in entries] == [[], []]


def test_sighup_takes_in_a_systems_own_figures_for_a_rule(tmp_path, dest):
    """A system's `respond = "watch"` for a rule, added while the gateway
    runs: its burst is only watched, and it keeps relaying."""
    port = free_port()
    config = write_config(tmp_path, dest.port, port, anomaly=BURST_RULE)
    gw = ServeProcess(config, port).start()
    try:
        # the last table of the file is mfa's
        config.write_text(config.read_text()
                          + 'anomaly = { messages_10m = { respond = "watch" } }\n')
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded" in gw.log.read_text(), timeout=5)
        assert [send_as_mfa(port, n)[0] for n in range(6)] == [250] * 6
        assert mail_code(port) == 250
        assert gw.terminate() == 0  # the event log written out
    finally:
        gw.stop()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["rule"] for e in events if e["event"] == "watch"] == ["messages_10m"]
    assert not [e for e in events if e["event"] == "suspended"]
