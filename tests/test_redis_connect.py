"""Reaching Redis as operators run it: with a password, over TLS, through a
Sentinel group. A wrong password or a CA that did not sign Redis's
certificate is a clear error in check-config and at start (not an outage
to ride out); through Sentinel the store follows a failover by itself, and
a master that lost what the old one held is written back to, never read as
"lifted"."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailgw.state.records import Suspension
from mailgw.state.redis_store import RedisStore
from tests.support.mail import send_as_mfa
from tests.support.process import ServeProcess, free_port
from tests.support.redis_server import RedisServer, SentinelGroup, Tls
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import BURST_RULE, cli, mail_code
from tests.test_serve_e2e import two_gateways, write_config


def told_once_each(dest, expected: int) -> None:
    """`dest` received `expected` notices for the owner, and no more came
    (several gateways, one notice each time)."""

    def notices() -> int:
        return sum(m.rcpt_tos == ["postmaster@mfa.gov.kz"] for m in dest.messages)

    wait_until(lambda: notices() >= expected, timeout=15, what="the notices")
    time.sleep(2)
    assert notices() == expected


def redis_state(url: str, more: str = "") -> str:
    return f'[state]\nbackend = "redis"\nredis_url = "{url}"\n{more}'


@pytest.fixture
def with_password():
    server = RedisServer(None, password="s3cret-pass").start()
    yield server
    server.stop()


def refuses_the_wrong_password(tmp_path, dest_port: int, right: str) -> Path:
    """`right` with the password "not-it" instead of "s3cret-pass" is an
    error in check-config and stops the start; `right` passes. The config
    with `right`."""
    port = free_port()
    wrong = right.replace("s3cret-pass", "not-it")
    config = write_config(tmp_path, dest_port, port, extra=redis_state(wrong))
    out = cli(config, "check-config")
    assert out.returncode == 1
    assert "authentication failed" in out.stderr and "not-it" not in out.stderr
    gw = ServeProcess(config, port)
    with pytest.raises(AssertionError, match="authentication failed"):
        gw.start()
    gw.stop()
    config = write_config(tmp_path, dest_port, port, extra=redis_state(right))
    out = cli(config, "check-config")
    assert out.returncode == 0, out.stderr
    assert "s3cret-pass" not in out.stdout  # printed masked
    return config


def test_a_wrong_password_is_an_error_in_check_config_and_at_start(tmp_path, dest,
                                                                    with_password):
    refuses_the_wrong_password(tmp_path, dest.port,
                               f"redis://:s3cret-pass@127.0.0.1:{with_password.port}/0")


@pytest.fixture
def tls(tmp_path):
    return Tls(tmp_path)


@pytest.fixture
def tls_redis(tls):
    server = tls.server().start()
    yield server
    server.stop()


def refuses_the_wrong_ca(tmp_path, dest_port: int, url: str, tls: Tls) -> None:
    """`url` with `tls`'s other CA is an error in check-config and stops the
    start; with its CA it works: a suspension from the CLI is in the store."""
    port = free_port()
    config = write_config(tmp_path, dest_port, port,
                          extra=redis_state(url, f'tls_ca_file = "{tls.other_ca}"'))
    out = cli(config, "check-config")
    assert out.returncode == 1 and "not trusted" in out.stderr and "tls_ca_file" in out.stderr
    gw = ServeProcess(config, port)
    with pytest.raises(AssertionError, match="not trusted"):
        gw.start()
    gw.stop()
    config = write_config(tmp_path, dest_port, port,
                          extra=redis_state(url, f'tls_ca_file = "{tls.ca}"'))
    assert cli(config, "check-config").returncode == 0
    assert cli(config, "suspend", "mfa", "--reason", "over TLS").returncode == 0
    store = RedisStore(url, ca_file=str(tls.ca))
    try:
        assert "mfa" in store.active()
    finally:
        store.close()


def test_tls_with_the_wrong_ca_is_an_error_and_the_right_one_works(tmp_path, dest, tls,
                                                                   tls_redis):
    refuses_the_wrong_ca(tmp_path, dest.port, f"rediss://127.0.0.1:{tls_redis.port}/0", tls)


def test_a_sentinel_group_over_tls_with_the_wrong_ca_is_an_error_and_the_right_one_works(
        tmp_path, dest, tls):
    """Sentinels, master and replica answer TLS only (rediss+sentinel://)."""
    group = SentinelGroup(tls)
    try:
        refuses_the_wrong_ca(tmp_path, dest.port, group.url, tls)
    finally:
        group.stop()


@pytest.fixture
def sentinels():
    group = SentinelGroup()
    yield group
    group.stop()


def test_the_store_follows_a_failover_and_writes_back_what_the_new_master_lacks(sentinels):
    store = RedisStore(sentinels.url, "failover:")
    try:
        record = store.suspend(Suspension("mfa", time.time(), "alice", reason="phishing"))
        assert record is not None
        # the replica has it (replication), then the master dies
        replica = RedisStore(sentinels.replica.url, "failover:")
        wait_until(lambda: "mfa" in replica.active(), what="replicated")
        replica.close()
        old = sentinels.master_port()
        sentinels.master.kill()
        wait_until(lambda: sentinels.master_port() != old, timeout=30, what="the failover")

        def answers() -> bool:
            try:
                return "mfa" in store.active()
            except Exception:
                return False

        wait_until(answers, timeout=15, what="the store on the new master")
        # a write the new master never saw (lost in the failover): written back
        lost = Suspension("moj", time.time(), "auto", rule="r", id=99)
        back, restored = store.confirm(lost, time.time())
        assert restored and back.system == "moj" and "moj" in store.active()
    finally:
        store.close()


def test_two_gateways_ride_a_sentinel_failover_losing_nothing(sentinels, dest, tmp_path):
    """Two gateways on one Sentinel group: a suspension decided once before
    the master dies holds through the failover; an operator's lift after
    it reaches both; their shared counts go on on the new master (the next
    burst is decided once again); every message accepted is delivered."""
    state = redis_state(sentinels.url, 'redis_prefix = "sentinel-twins:"\n')
    gateways = two_gateways(tmp_path, dest.port, BURST_RULE + state)
    a, b = gateways
    accepted = 0
    store = RedisStore(sentinels.url, "sentinel-twins:")

    def active() -> set[str]:
        try:
            return set(store.active())
        except Exception:  # between masters
            return set()

    try:
        a.start(), b.start()
        for n, gw in enumerate((a, b, a, b)):  # the fourth crosses the shared count
            assert send_as_mfa(gw.port, n)[0] == 250
            accepted += 1
        wait_until(lambda: "mfa" in active(), what="the suspension recorded")
        wait_until(lambda: mail_code(a.port) == mail_code(b.port) == 450, timeout=5,
                   what="both refusing")
        old = sentinels.master_port()
        sentinels.master.kill()
        wait_until(lambda: sentinels.master_port() != old, timeout=30, what="the failover")
        wait_until(lambda: "mfa" in active(), timeout=15, what="the record on the new master")
        assert mail_code(a.port) == mail_code(b.port) == 450  # held through it

        assert cli(a.config_path, "lift", "mfa", "--reason", "password changed").returncode == 0
        wait_until(lambda: mail_code(a.port) == mail_code(b.port) == 250, timeout=10,
                   what="the lift on both")
        for n, gw in enumerate((a, b, a, b)):
            assert send_as_mfa(gw.port, 100 + n)[0] == 250
            accepted += 1
        wait_until(lambda: "mfa" in active(), what="the second suspension")
        # the first record is there as replicated or, if the failover lost
        # it (replication is asynchronous), as a gateway wrote it back
        history = [h.action for h in store.history("mfa") if h.action != "held"]
        assert history in (["suspended", "lifted", "suspended"],
                           ["restored", "lifted", "suspended"]), history
        # held mail goes out at the lift; the second burst's is held: lift again
        assert cli(a.config_path, "lift", "mfa", "--reason", "done").returncode == 0
        wait_until(lambda: len(dest.messages) >= accepted, timeout=30, what="all delivered")
        delivered = [m for m in dest.messages if m.mail_from == "a@mfa.gov.kz"]
        assert len(delivered) == accepted == 8
        told_once_each(dest, 4)  # of each suspension and lift, by one of the two
    finally:
        a.stop(), b.stop()
        store.close()
