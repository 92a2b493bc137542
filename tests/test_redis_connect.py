"""Reaching Redis as operators run it: with a password, over TLS, through a
Sentinel group. A wrong password or a CA that did not sign Redis's
certificate is a clear error in check-config and at start (not an outage
to ride out); through Sentinel the store follows a failover by itself, and
a master that lost what the old one held is written back to, never read as
"lifted"."""

from __future__ import annotations

import time

import pytest
import trustme

from mailgw.state.records import Suspension
from mailgw.state.redis_store import RedisStore
from tests.support.process import ServeProcess, free_port
from tests.support.redis_server import RedisServer, SentinelGroup
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import cli
from tests.test_serve_e2e import write_config


def redis_state(url: str, more: str = "") -> str:
    return f'[state]\nbackend = "redis"\nredis_url = "{url}"\n{more}'


@pytest.fixture
def with_password():
    server = RedisServer(None, password="s3cret-pass").start()
    yield server
    server.stop()


def test_a_wrong_password_is_an_error_in_check_config_and_at_start(tmp_path, dest,
                                                                    with_password):
    port = free_port()
    wrong = f"redis://:not-it@127.0.0.1:{with_password.port}/0"
    config = write_config(tmp_path, dest.port, port, extra=redis_state(wrong))
    out = cli(config, "check-config")
    assert out.returncode == 1
    assert "authentication failed" in out.stderr and "not-it" not in out.stderr
    gw = ServeProcess(config, port)
    with pytest.raises(AssertionError, match="authentication failed"):
        gw.start()
    gw.stop()
    right = f"redis://:s3cret-pass@127.0.0.1:{with_password.port}/0"
    config = write_config(tmp_path, dest.port, port, extra=redis_state(right))
    out = cli(config, "check-config")
    assert out.returncode == 0, out.stderr
    assert "s3cret-pass" not in out.stdout  # printed masked


@pytest.fixture
def tls_redis(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "redis.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    port = free_port()
    server = RedisServer(port, "--port", "0", "--tls-port", str(port),
                         "--tls-cert-file", str(tmp_path / "redis.pem"),
                         "--tls-key-file", str(tmp_path / "redis.pem"),
                         "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
                         "--tls-auth-clients", "no",
                         client={"ssl": True, "ssl_ca_certs": str(tmp_path / "ca.pem")}).start()
    yield server
    server.stop()


def test_tls_with_the_wrong_ca_is_an_error_and_the_right_one_works(tmp_path, dest, tls_redis):
    port = free_port()
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    config = write_config(tmp_path, dest.port, port,
                          extra=redis_state(url, f'tls_ca_file = "{tmp_path / "other-ca.pem"}"'))
    out = cli(config, "check-config")
    assert out.returncode == 1 and "not trusted" in out.stderr and "tls_ca_file" in out.stderr
    gw = ServeProcess(config, port)
    with pytest.raises(AssertionError, match="not trusted"):
        gw.start()
    gw.stop()
    config = write_config(tmp_path, dest.port, port,
                          extra=redis_state(url, f'tls_ca_file = "{tmp_path / "ca.pem"}"'))
    assert cli(config, "check-config").returncode == 0
    assert cli(config, "suspend", "mfa", "--reason", "over TLS").returncode == 0
    store = RedisStore(url, ca_file=str(tmp_path / "ca.pem"))
    try:
        assert "mfa" in store.active()
    finally:
        store.close()


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
