"""The SMTP dialogue's own refusals (a command out of sequence, bad syntax,
unknown parameters, a declared size over the limit, ...), which aiosmtpd
decides: each reaches the client with an enhanced status code and is a
`rejected` event with a reason, as the gateway's own refusals are. Real
sockets, exact bytes, a real gateway."""

from __future__ import annotations

import json

import pytest

from tests.support.client import RawClient
from tests.support.gateway import GatewayThread

EHLO = "EHLO mail.mfa.gov.kz"
MAIL = "MAIL FROM:<a@mfa.gov.kz>"
RCPT = "RCPT TO:<x@example.com>"


def rejected(gw: GatewayThread) -> list[dict]:
    path = gw.gateway.config.gateway.event_log
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == "rejected"]


@pytest.mark.parametrize("before,command,reply,reason", [
    ([], MAIL, "503 5.5.1 Error: send HELO first", "bad_sequence"),
    ([], "AUTH PLAIN", "503 5.5.1 Error: send EHLO first", "bad_sequence"),
    ([EHLO], RCPT, "503 5.5.1 Error: need MAIL command", "bad_sequence"),
    ([EHLO, MAIL], MAIL, "503 5.5.1 Error: nested MAIL command", "bad_sequence"),
    ([EHLO, MAIL], "DATA", "503 5.5.1 Error: need RCPT command", "bad_sequence"),
    ([EHLO, MAIL, RCPT], "DATA x", "501 5.5.4 Syntax: DATA", "bad_syntax"),
    ([], "HELO", "501 5.5.4 Syntax: HELO hostname", "bad_syntax"),
    ([EHLO], "MAIL <a@mfa.gov.kz>", "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]",
     "bad_syntax"),
    ([EHLO, MAIL], "RCPT x@example.com", "501 5.5.4 Syntax: RCPT TO: <address> [SP <mail-parameters>]",
     "bad_syntax"),
    ([EHLO], "RSET x", "501 5.5.4 Syntax: RSET", "bad_syntax"),
    ([EHLO], "QUIT x", "501 5.5.4 Syntax: QUIT", "bad_syntax"),
    ([EHLO], MAIL + " BODY=9BIT", "501 5.5.4 Error: BODY can only be", "bad_syntax"),
    ([EHLO], MAIL + " SMTPUTF8", "501 5.5.4 Error: SMTPUTF8 is not offered", "bad_syntax"),
    ([EHLO], "HELP BOGUS", "501 5.5.4 No help for that; supported commands: AUTH DATA",
     "bad_syntax"),
    ([EHLO], "", "500 5.5.2 Error: bad syntax", "bad_syntax"),
    ([EHLO], "BOGUS", "500 5.5.2 Error: command not recognized", "unrecognized_command"),
    (["HELO mail.mfa.gov.kz"], "AUTH PLAIN", "500 5.5.2 Error: command not recognized",
     "unrecognized_command"),
    ([EHLO], "EXPN staff", "502 5.5.1 Error: command not implemented", "unrecognized_command"),
    ([EHLO], MAIL + " FOO=1", "555 5.5.4 MAIL FROM parameters not recognized", "unknown_parameter"),
    ([EHLO, MAIL], RCPT + " NOTIFY=NEVER", "555 5.5.4 RCPT TO parameters not recognized",
     "unknown_parameter"),
    ([EHLO], MAIL + " SIZE=26214401", "552 5.3.4 Message exceeds the size limit of 25 MiB",
     "message_too_large"),
    ([EHLO], "MAIL FROM:<a@@mfa.gov.kz>", "553 5.1.3 Error: malformed address", "bad_address"),
    ([EHLO], "VRFY <a@@mfa.gov.kz>", "502 5.1.3 Could not VRFY: malformed address",
     "bad_address"),
    ([EHLO], "STARTTLS", "454 4.7.0 TLS not available", "tls_not_available"),
    ([EHLO], "AUTH PLAIN", "538 5.7.11 Encryption required", "auth_without_tls"),
    ([EHLO], "MAIL FROM:<é@mfa.gov.kz>", "553 5.6.7 Non-ASCII", "non_ascii"),
], ids=[
    "mail-before-helo", "auth-before-ehlo", "rcpt-before-mail", "nested-mail", "data-before-rcpt",
    "data-with-argument", "helo-without-hostname", "mail-without-from", "rcpt-without-to",
    "rset-with-argument", "quit-with-argument", "unknown-body", "smtputf8-not-offered",
    "help-for-unknown-command", "empty-line", "unknown-command", "auth-after-helo", "expn",
    "unknown-mail-parameter", "rcpt-parameter", "declared-size-over-limit", "malformed-address",
    "vrfy-malformed-address", "starttls-without-tls", "auth-without-tls", "non-ascii-address",
])
def test_a_refusal_of_the_smtp_dialogue_has_an_enhanced_code_and_a_rejected_event(
        gateway, before, command, reply, reason):
    with RawClient(gateway.port) as c:
        for line in before:
            assert c.cmd(line)[:1] == "2", line
        got = c.cmd(command.encode() + b"\r\n")
        assert got.startswith(reply), got
        assert c.cmd("NOOP") == "250 OK"  # the session goes on
    event = rejected(gateway)[-1]
    assert (event["reason"], event["code"], event["system"]) == (reason, int(reply[:3]), "mfa")


def test_the_last_error_a_session_may_make_is_recorded_and_closes_it(make_config):
    with GatewayThread(make_config(limits={"max_errors": 3})) as gw, RawClient(gw.port) as c:
        assert c.cmd("DATA").startswith("503 5.5.1")
        assert c.cmd("RCPT TO:<x@example.com>").startswith("503 5.5.1")
        assert c.cmd("MAIL FROM:<a@mfa.gov.kz> SIZE=x").startswith("503 5.5.1")
        assert c.reply().startswith("421 4.7.0 Too many errors")
        assert c.closed()
    assert [e["reason"] for e in rejected(gw)] == ["bad_sequence"] * 3 + ["too_many_errors"]
