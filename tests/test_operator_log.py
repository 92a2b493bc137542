"""The text log an operator reads: every refusal and every session the
gateway ends is one line with the client, the system, the reply and the
reason (a warning for an attempt at SMTP smuggling); the startup line names
the addresses and counts in words."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest

from tests.support.client import RawClient
from tests.support.gateway import GatewayThread
from tests.support.process import ServeProcess, free_port
from tests.support.waiting import wait_until
from tests.test_ingress_replies import send_data, session
from tests.test_serve_e2e import write_config

MSG = b"Subject: t\r\n\r\nbody\r\n"


def relay_denied(port: int) -> None:
    with session(port, source="127.0.0.2") as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")


def sender_domain(port: int) -> None:
    with session(port) as c:
        c.cmd("MAIL FROM:<a@example.com>")


def smuggling(port: int) -> None:
    with session(port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        send_data(c, b"Subject: x\r\n\r\nhi\r\n\n.\r\nMAIL FROM:<a@mfa.gov.kz>\r\n")


def too_large(port: int) -> None:
    with session(port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz> SIZE=5000")


def too_large_data(port: int) -> None:
    with session(port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        send_data(c, MSG + b"x" * 5000 + b"\r\n")


def too_many_recipients(port: int) -> None:
    with session(port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        for i in range(101):
            c.cmd(f"RCPT TO:<u{i}@example.com>")


def bad_command(port: int) -> None:
    with session(port) as c:
        c.cmd("BOGUS")


def bare_lf_command(port: int) -> None:
    with session(port) as c:
        c.cmd(b"NOOP\n")


def too_many_errors(port: int) -> None:
    with session(port) as c:
        for _ in range(2):
            c.cmd("RCPT TO:<x@example.com>")
        c.reply()  # the 421 after the last 503


def too_many_connections(port: int) -> None:
    held = [RawClient(port), RawClient(port)]
    RawClient(port).close()
    for c in held:
        c.close()


def idle(port: int) -> None:
    with session(port) as c:
        c.reply()


def session_too_long(port: int) -> None:
    with session(port) as c:
        wait_until(lambda: c.reply().startswith("421"))


LIMITS = {"max_message_size": 4096, "max_recipients": 100, "max_errors": 2,
          "max_connections_per_ip": 2}
MFA = "refused 127.0.0.1 (mfa): "


@pytest.mark.parametrize("dialogue,limits,level,line", [
    (relay_denied, {}, logging.INFO, "refused 127.0.0.2 (no system): 550 5.7.1 Relaying denied: "
     "this client is not a connected mail system [relay_denied] recipient=x@example.com"),
    (sender_domain, {}, logging.INFO, MFA + "550 5.7.1 Sender domain example.com is not "
     "registered for mail system mfa [sender_domain] sender=a@example.com"),
    (smuggling, {}, logging.WARNING, MFA + "550 5.6.2 Message rejected: bare CR or LF in "
     "message data; lines must end with CRLF [bare_line_ending]"),
    (too_large, {}, logging.INFO, MFA + "552 5.3.4 Message exceeds the size limit of 4 KiB "
     "[message_too_large]"),
    (too_large_data, {}, logging.INFO, MFA + "552 5.3.4 Message exceeds the size limit of "
     "4 KiB [message_too_large]"),
    (too_many_recipients, {}, logging.INFO, MFA + "452 4.5.3 Too many recipients; send the rest "
     "in another message [too_many_recipients] recipient=u100@example.com"),
    (bad_command, {}, logging.INFO, MFA + "500 5.5.2 Error: command not recognized "
     "[unrecognized_command]"),
    (bare_lf_command, {}, logging.INFO, MFA + "500 5.5.2 Syntax error: command lines must end "
     "with CRLF (bare CR or LF received) [bare_line_ending]"),
    (too_many_errors, {}, logging.INFO, MFA + "421 4.7.0 Too many errors; closing connection "
     "[too_many_errors]"),
    (too_many_connections, {}, logging.INFO, MFA + "421 4.7.0 Too many connections; try again "
     "later [too_many_connections]"),
    (idle, {"idle_timeout": "0.3s"}, logging.INFO,
     "closed 127.0.0.1 (mfa): 421 4.4.2 Idle timeout; closing connection [idle_timeout]"),
    (session_too_long, {"session_timeout": "0.5s"}, logging.INFO, "closed 127.0.0.1 (mfa): "
     "421 4.4.2 Session time limit reached; closing connection [session_too_long]"),
], ids=lambda v: v.__name__ if callable(v) else "")
def test_each_refusal_is_one_line_with_client_system_reply_and_reason(
        make_config, caplog, dialogue: Callable[[int], None], limits, level, line):
    cfg = make_config(limits={**LIMITS, **limits}, anomaly={"rules": []})
    with caplog.at_level(logging.INFO, logger="mailgw"), GatewayThread(cfg) as gw:
        dialogue(gw.port)
        wait_until(lambda: any(r.getMessage() == line for r in caplog.records),
                   what=f"the line {line!r} in {caplog.text}")
    (record,) = [r for r in caplog.records if r.getMessage() == line]
    assert record.levelno == level and record.name == "mailgw.ingress"


def test_an_accepted_message_is_one_line_and_no_refusal(make_config, dest, caplog):
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"})
    with caplog.at_level(logging.INFO, logger="mailgw.ingress"), GatewayThread(cfg) as gw, \
            session(gw.port) as c:
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        assert send_data(c, MSG).startswith("250")
    assert [r.getMessage().split(": ", 1)[1].split()[0] for r in caplog.records] == ["accepted"]


def test_serve_logs_its_addresses_counts_and_refusals(tmp_path, dest):
    port = free_port()
    gw = ServeProcess(write_config(tmp_path, dest.port, port), port).start()
    try:
        with session(port, source="127.0.0.1") as c:
            c.cmd("MAIL FROM:<a@example.com>")
        wait_until(lambda: "[sender_domain]" in gw.log.read_text(), what="the refusal's line")
    finally:
        gw.terminate()
    text = gw.log.read_text()
    assert re.search(rf"INFO mailgw: mailgw listening: SMTP on 127\.0\.0\.1:{port}, HTTP on "
                     r"127\.0\.0\.1:\d+; 1 system; 0 messages waiting in the queue\n", text), text
    assert ("INFO mailgw.ingress: refused 127.0.0.1 (mfa): 550 5.7.1 Sender domain example.com"
            " is not registered for mail system mfa [sender_domain] sender=a@example.com\n"
            in text)
