"""DATA is read whole, not line by line: the end line is found wherever the
bytes happen to be cut, dot-stuffing is undone, and what follows the end
line (a pipelined command) stays for the next command. Real sockets, a real
gateway, a real destination."""

from __future__ import annotations

import json
import time

from tests.support.client import RawClient
from tests.support.gateway import GatewayThread
from tests.support.waiting import wait_until

HEAD = b"From: a@mfa.gov.kz\r\nTo: x@example.com\r\nSubject: dots\r\n\r\n"


def session(port: int) -> RawClient:
    c = RawClient(port)
    assert c.cmd("EHLO mail.mfa.gov.kz").startswith("250")
    assert c.cmd("MAIL FROM:<a@mfa.gov.kz>").startswith("250")
    assert c.cmd("RCPT TO:<x@example.com>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    return c


def arrived(dest, queue_id: str) -> bytes:
    wait_until(lambda: queue_id in dest.received_ids(), what=f"{queue_id} at the destination")
    (msg,) = [m for m in dest.messages if f" id {queue_id}".encode() in m.data]
    return msg.data


def test_dot_stuffed_lines_arrive_unstuffed(gateway, dest):
    body = b"line\r\n.hidden dot\r\n.\r\n"  # the client means ".hidden dot" and "."
    stuffed = b"line\r\n..hidden dot\r\n..\r\n"
    with session(gateway.port) as c:
        reply = c.cmd(HEAD + stuffed + b".\r\n")
    assert reply.startswith("250 2.0.0"), reply
    assert arrived(dest, reply.split()[-1]).endswith(HEAD + body)


def test_end_line_cut_anywhere_by_the_network_is_still_found(gateway, dest):
    message = HEAD + b"a\r\n" * 50 + b".\r\n"
    with session(gateway.port) as c:
        for i in range(0, len(message), 7):  # pieces that split CRLF and the end line
            c.send(message[i:i + 7])
            time.sleep(0.002)
        reply = c.reply()
        assert reply.startswith("250 2.0.0"), reply
        assert c.cmd("NOOP").startswith("250")
    assert arrived(dest, reply.split()[-1]).endswith(HEAD + b"a\r\n" * 50)


def test_first_line_stuffed_and_a_one_line_message(gateway, dest):
    with session(gateway.port) as c:
        reply = c.cmd(b"..starts with a dot\r\n.\r\n")
    assert reply.startswith("250 2.0.0"), reply
    assert arrived(dest, reply.split()[-1]).endswith(b"\r\n.starts with a dot\r\n")


def test_an_empty_message_ends_at_once_and_the_session_stays_in_step(gateway, dest):
    with session(gateway.port) as c:
        c.send(b".")
        time.sleep(0.05)  # the end line arrives in two pieces
        reply = c.cmd(b"\r\n")
        assert reply.startswith("250 2.0.0"), reply  # as Postfix: headers are not required
        assert c.cmd("NOOP").startswith("250")
    assert arrived(dest, reply.split()[-1]).startswith(b"Received: ")


def test_a_command_pipelined_after_the_end_line_is_answered_next(gateway, dest):
    with session(gateway.port) as c:
        c.send(HEAD + b"body\r\n.\r\nRSET\r\nNOOP\r\n")
        queued = c.reply()
        assert queued.startswith("250 2.0.0"), queued
        assert c.reply().startswith("250")  # RSET
        assert c.reply().startswith("250")  # NOOP
    arrived(dest, queued.split()[-1])


def test_a_message_too_big_is_drained_to_its_end_and_refused(make_config, dest):
    cfg = make_config(limits={"max_message_size": 10_000})
    with GatewayThread(cfg) as gw, session(gw.port) as c:
        chunk = b"y" * 70 + b"\r\n"
        for _ in range(400):  # 28 KB, sent in pieces
            c.send(chunk)
        assert c.cmd(b".\r\n").startswith("552 5.3.4")
        assert c.cmd("NOOP").startswith("250")
    assert dest.messages == []


def test_a_client_gone_in_the_middle_of_data_leaves_nothing_and_the_gateway_serves_on(gateway,
                                                                                       caplog):
    c = session(gateway.port)
    c.send(HEAD + b"half a mess")
    c.close()
    with session(gateway.port) as again:
        assert again.cmd(HEAD + b"whole\r\n.\r\n").startswith("250 2.0.0")
    log = gateway.gateway.config.gateway.event_log.read_text().splitlines()
    assert [json.loads(line)["event"] for line in log].count("accepted") == 1
    assert "internal error" not in caplog.text
