"""Faults of the gateway's own host, through `mailgw serve`: restarts (kill -9)
while the next hop is slow, and a spool disk that fills up. Whatever got a
250 arrives; nothing is set aside for restarts it had no part in; the
gateway neither wedges nor refuses to start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.destination import Destination
from tests.support.process import ServeProcess, free_port
from tests.support.proxy import Proxy
from tests.support.waiting import wait_until
from tests.test_serve_e2e import send_one, write_config


def spooled(root: Path, state: str) -> set[str]:
    return {p.stem for p in (root / state).glob("*.msg")}


def events(path: Path, kind: str) -> list[dict]:
    if not path.exists():
        return []
    return [e for e in map(json.loads, filter(str.strip, path.read_text().splitlines()))
            if e["event"] == kind]


def test_restarts_while_the_next_hop_is_slow_set_nothing_aside_and_every_250_arrives(
        tmp_path, dest: Destination):
    with Proxy(dest.port) as proxy:
        proxy.hold(True)  # connections to the next hop hang before its greeting
        port = free_port()
        config = write_config(tmp_path, proxy.port, port,
                              delivery='connect_timeout = "60s"\n'
                                       "max_connections_per_destination = 2")
        serve = ServeProcess(config, port)
        spool = tmp_path / "spool"
        try:
            serve.start()
            ids = [send_one(port, n) for n in range(30)]
            assert all(ids)
            # five restarts (the default max_crashes) and one more, each with
            # every message claimed and waiting for a connection
            for _ in range(6):
                wait_until(lambda: spooled(spool, "active") == set(ids), timeout=20,
                           what="every message claimed, waiting for the next hop")
                serve.kill()
                serve.start()
            proxy.hold(False)
            wait_until(lambda: set(ids) <= dest.received_ids(), timeout=60,
                       what="every accepted message at the destination")
            assert spooled(spool, "corrupt") == set()
            assert events(tmp_path / "events.jsonl", "set_aside") == []
        finally:
            serve.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs for the gateway's spool, event log and state file."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write until the disk says no."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_spool_disk_refuses_new_mail_loses_nothing_and_drains_when_space_returns(
        tmp_path, small_disk, dest):
    dest.faults.data = "451 4.3.0 down for now"  # everything is deferred, again and again
    port = free_port()
    config = write_config(tmp_path, dest.port, port, retry=("1s", "1s"), data_dir=small_disk,
                          extra='[limits]\nmin_free_disk = "1MiB"')
    serve = ServeProcess(config, port)
    body = ("x" * 78 + "\r\n") * 2500  # 200 kB
    accepted: list[str] = []
    try:
        serve.start()
        for n in range(60):  # about 12 MiB offered to a 6 MiB disk
            queue_id = send_one(port, n, body)
            if queue_id:
                accepted.append(queue_id)
        assert 10 < len(accepted) < 60
        # refused before the floor: the gateway's own writes keep their room
        assert shutil.disk_usage(small_disk).free >= 1024 * 1024 - 300_000
        # then something else takes the rest: deferrals cannot be recorded
        _fill(small_disk / "filler")
        wait_until(lambda: "the spool's disk unavailable: [Errno 28]" in serve.log.read_text(),
                   timeout=20, what="a deferral that cannot be recorded")
        assert send_one(port, 1000) is None  # 452 at MAIL, no wedge
        serve.kill()
        serve.start()  # recovery needs no free space
        assert send_one(port, 1001) is None
        os.unlink(small_disk / "filler")
        dest.faults.data = None
        wait_until(lambda: set(accepted) <= dest.received_ids(), timeout=90,
                   what="every accepted message delivered once space returned")
        wait_until(lambda: not list((small_disk / "spool").glob("*/*.msg")), timeout=30,
                   what="an empty spool")
        assert send_one(port, 1002)  # and new mail is taken again
        log = serve.log.read_text()
        assert "Task exception was never retrieved" not in log
        assert "cannot start" not in log
    finally:
        serve.stop()
