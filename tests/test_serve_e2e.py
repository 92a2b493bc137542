"""End to end through `mailgw serve` as a subprocess: restart and kill -9
recovery, clean SIGTERM. Every queue id that got a 250 must arrive."""

from __future__ import annotations

import smtplib
import threading
from pathlib import Path

import pytest

from tests.support.client import RawClient
from tests.support.destination import Destination
from tests.support.process import ServeProcess, free_port
from tests.support.waiting import wait_until

NO_RULES = "[anomaly]\nrules = []  # these tests are about durability, not suspensions\n"


def write_config(tmp_path: Path, dest_port: int, port: int, anomaly: str = NO_RULES,
                 retry: tuple[str, str] = ("1s", "2s"), extra: str = "",
                 delivery: str = "", gateway: str = "", data_dir: Path | None = None) -> Path:
    """`retry`: first retry, longest interval; `extra`: more TOML tables;
    `delivery`, `gateway`: more keys of [delivery], [gateway]; `data_dir`:
    where the spool, event log and state file go (else beside the config)."""
    path = tmp_path / "config.toml"
    data = data_dir or tmp_path
    path.write_text(f"""
[gateway]
hostname = "gw.test"
listen = ["127.0.0.1:{port}"]
spool_dir = "{data / 'spool'}"
event_log = "{data / 'events.jsonl'}"
state_file = "{data / 'state.db'}"
{gateway}

{anomaly}
[http]
listen = ["127.0.0.1:0"]

[delivery]
relayhost = "[127.0.0.1]:{dest_port}"
first_retry = "{retry[0]}"
max_retry_interval = "{retry[1]}"
{delivery}

[[systems]]
id = "mfa"
name = "Ministry of Foreign Affairs"
owners = ["postmaster@mfa.gov.kz"]
networks = ["127.0.0.0/8"]
sender_domains = ["mfa.gov.kz"]

{extra}
""")
    return path


def two_gateways(tmp_path: Path, dest_port: int, anomaly: str) -> list[ServeProcess]:
    """Two `mailgw serve` (not started) as on two hosts: a directory, a port,
    a spool each; `anomaly`: their rules and [state], which they share."""
    gateways = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        port = free_port()
        gateways.append(ServeProcess(write_config(tmp_path / name, dest_port, port,
                                                  anomaly=anomaly), port))
    return gateways


@pytest.fixture
def serve(tmp_path, dest):
    port = free_port()
    proc = ServeProcess(write_config(tmp_path, dest.port, port), port)
    yield proc
    proc.stop()


def send_one(port: int, n: int, body: str = "") -> str | None:
    """The queue id if the gateway answered 250, None if anything failed."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo("mail.mfa.gov.kz")
            c.mail("a@mfa.gov.kz")
            c.rcpt(f"u{n}@example.com")
            code, text = c.data(f"Subject: burst {n}\r\n\r\nmessage {n}\r\n{body}".encode())
    except (OSError, smtplib.SMTPException):
        return None
    return text.decode().split()[-1] if code == 250 else None


def test_burst_with_kill_9_and_restart_loses_no_accepted_message(serve, dest: Destination):
    dest.faults.delay = 0.05  # keep deliveries in flight when the kill comes
    serve.start()
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        n = 0
        while not stop.is_set():
            queue_id = send_one(serve.port, k * 100000 + n)
            n += 1
            if queue_id:
                with lock:
                    accepted.append(queue_id)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(accepted) >= 150, timeout=60, what="150 accepted")
    serve.kill()  # mid-burst: sessions, spool writes and deliveries all cut off
    killed_at = len(accepted)
    serve.start()
    wait_until(lambda: len(accepted) >= killed_at + 100, timeout=60, what="100 more accepted")
    stop.set()
    for t in threads:
        t.join(30)
    dest.faults.delay = 0
    wait_until(lambda: set(accepted) <= dest.received_ids(), timeout=60,
               what="every accepted message at the destination")
    assert serve.terminate() == 0
    assert len(accepted) >= 250


def test_sigterm_finishes_the_transaction_in_progress_then_exits(serve, dest):
    serve.start()
    with RawClient(serve.port) as c:
        c.cmd("EHLO mail.mfa.gov.kz")
        c.cmd("MAIL FROM:<a@mfa.gov.kz>")
        c.cmd("RCPT TO:<x@example.com>")
        assert c.cmd("DATA").startswith("354")
        c.send(b"Subject: in flight\r\n\r\n")
        assert serve.proc is not None
        serve.proc.send_signal(15)
        c.send(b"still here\r\n")
        reply = c.cmd(b".\r\n")
        assert reply.startswith("250 2.0.0"), reply
        assert c.reply().startswith("421 4.3.2")
    assert serve.proc.wait(30) == 0
    queue_id = reply.split()[-1]
    wait_until(lambda: queue_id in dest.received_ids() or
               (serve.config_path.parent / "spool" / "queue" / f"{queue_id}.msg").exists())


def test_mail_queued_while_destination_is_down_is_delivered_after_restart(serve, dest):
    dest.faults.data = "451 4.3.0 down for maintenance"
    serve.start()
    ids = [send_one(serve.port, n) for n in range(5)]
    assert all(ids)
    wait_until(lambda: len([c for c in dest.commands if c.startswith("MAIL")]) >= 5)
    assert serve.terminate() == 0
    dest.faults.data = None
    serve.start()
    wait_until(lambda: set(ids) <= dest.received_ids(), timeout=20)  # type: ignore[arg-type]
