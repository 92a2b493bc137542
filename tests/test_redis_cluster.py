"""mailgw on a Redis Cluster of three masters: every script touches one
slot (a system's windows and its senders' share the system's hash tag, the
store's records the store's), so systems spread over the nodes and each
event is one call to one node; two gateways decide a crossing once and obey
a lift; a node restarted empty costs only its own systems' counts; a wrong
password is a clear error. The engine's and the store's behaviour on a
cluster are the same tests as on one server (test_anomaly_engine.py,
test_sender_rules.py, test_state_stores.py: the "cluster" runs)."""

from __future__ import annotations

import asyncio
import random
import re
import time

import pytest

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.judge import engines
from mailgw.anomaly.rules import Rule
from mailgw.config import Anomaly
from mailgw.state.records import Suspension
from mailgw.state.redis_store import RedisStore
from mailgw.state.redis_windows import RedisWindows
from tests.support.mail import send_as_mfa
from tests.support.process import ServeProcess, free_port
from tests.support.redis_server import Cluster, Tls
from tests.support.shared_windows import count, fresh_prefix, run_on_redis
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import BURST_RULE, cli, mail_code
from tests.test_redis_connect import (
    redis_state,
    refuses_the_wrong_ca,
    refuses_the_wrong_password,
    told_once_each,
)
from tests.test_serve_e2e import two_gateways, write_config

T0 = 1_732_406_400.0
SYSTEMS = [f"sys{i}" for i in range(12)]


def traffic(rng: random.Random, n: int):
    """Several systems, each with a few mailboxes, mailing and bouncing."""
    for i in range(n):
        system = rng.choice(SYSTEMS)
        sender = f"user{rng.randrange(3)}@{system}.gov.kz"
        if rng.random() < 0.8:
            yield {"ts": T0 + i, "system": system, "event": "accepted", "sender": sender,
                   "recipients": [f"u{rng.randrange(9)}@d{rng.randrange(30)}.kz"], "size": 900}
        else:
            yield {"ts": T0 + i, "system": system, "event": "bounced", "sender": sender,
                   "recipient": "x@example.com", "code": 550}


def tag(key: str) -> str:
    return re.search(r"\{([^}]*)\}", key).group(1)


def test_a_systems_windows_and_its_senders_live_in_its_slot(redis_cluster):
    systems, senders = engines(Anomaly(), [])
    prefix = fresh_prefix()
    run_on_redis(redis_cluster.url, prefix, systems, traffic(random.Random(3), 600), senders)
    store = RedisStore(redis_cluster.url, prefix)
    try:
        store.suspend(Suspension("sys1", time.time(), "alice", reason="test"))
    finally:
        store.close()

    keys = redis_cluster.keys(f"{prefix}*")
    windows = {k: node for k, node in keys.items() if k.startswith(f"{prefix}w:")}
    of_senders = {k: node for k, node in keys.items() if k.startswith(f"{prefix}u:")}
    # the hash tag is the system's, for its senders' windows too
    assert {tag(k) for k in windows} == {tag(k) for k in of_senders} == set(SYSTEMS)
    assert any("@" in k for k in of_senders)
    for key, node in of_senders.items():
        assert node is redis_cluster.node_of(f"{{{tag(key)}}}")
    assert len(set(windows.values())) == 3  # twelve systems spread over the three masters
    # the store's records share one tag of their own
    stored = set(redis_cluster.keys(f"{{{prefix.rstrip(':')}}}:*"))
    assert {f"{{{prefix.rstrip(':')}}}:active", f"{{{prefix.rstrip(':')}}}:audit"} <= stored


def test_a_node_restarted_empty_costs_only_its_own_systems_counts():
    """The restarted node has neither data nor scripts: its systems count
    afresh, and the others' events, sent in the same batch, are counted
    once, not again when the batch's refused part is sent anew."""
    cluster = Cluster()
    systems = Engine([Rule("m", "ceiling", "messages", 600, 1e9)])
    prefix = fresh_prefix()
    by_node: dict[int, str] = {}
    for name in SYSTEMS:
        by_node.setdefault(cluster.node_of(f"{prefix}w:{{{name}}}:").port, name)
    lost, kept = list(by_node.values())[:2]

    def message(system, i):
        return systems.tally({"ts": T0 + i, "system": system, "event": "accepted",
                              "recipients": [f"u{i}@d{i}.kz"], "size": 900})

    async def batch(windows, i):
        # submitted in one turn of the loop: one pipeline over both nodes
        return await asyncio.gather(*(count(windows, message(s, i)) for s in (lost, kept)))

    def messages(counts):
        return systems.named(counts)[("messages", 600)]

    async def go():
        windows = RedisWindows(cluster.url, prefix, systems.windows, metrics=systems.metrics)
        try:
            for i in range(5):
                await batch(windows, i)
            node = cluster.node_of(f"{prefix}w:{{{lost}}}:")
            node.kill()
            node.start()
            wait_until(cluster.formed, timeout=20, what="the node back in the cluster")
            # the client's connection to the node died with it: found on a
            # read, which counts nothing
            while await windows.history(lost, T0) is None:
                await asyncio.sleep(0.1)
            return await batch(windows, 5), windows.degraded
        finally:
            await windows.close()

    try:
        (of_lost, of_kept), degraded = asyncio.run(go())
    finally:
        cluster.stop()
    assert not degraded
    assert messages(of_lost) == 1  # counted afresh: the node forgot
    assert messages(of_kept) == 6  # five before, this one: counted once


def test_two_gateways_on_a_cluster_decide_a_crossing_once_and_obey_a_lift(redis_cluster, dest,
                                                                         tmp_path):
    state = redis_state(redis_cluster.url, 'redis_prefix = "cluster-twins:"\n')
    a, b = two_gateways(tmp_path, dest.port, BURST_RULE + state)
    store = RedisStore(redis_cluster.url, "cluster-twins:")
    try:
        a.start(), b.start()
        for n, gw in enumerate((a, b, a, b)):  # the fourth crosses the shared count
            assert send_as_mfa(gw.port, n)[0] == 250
        wait_until(lambda: "mfa" in store.active(), what="the suspension recorded")
        wait_until(lambda: mail_code(a.port) == mail_code(b.port) == 450, timeout=5,
                   what="both refusing")
        assert [h.action for h in store.history("mfa") if h.action != "held"] == ["suspended"]

        assert cli(b.config_path, "lift", "mfa", "--reason", "password changed").returncode == 0
        wait_until(lambda: mail_code(a.port) == mail_code(b.port) == 250, timeout=10,
                   what="the lift on both")
        # mail flows again, and everything accepted goes out
        assert send_as_mfa(a.port, 9)[0] == 250
        wait_until(lambda: len(dest.messages) >= 5, timeout=30, what="all delivered")
        assert [h.action for h in store.history("mfa") if h.action != "held"] == \
            ["suspended", "lifted"]
        told_once_each(dest, 2)  # of the suspension and the lift, by one of the two
    finally:
        a.stop(), b.stop()
        store.close()


@pytest.fixture
def cluster_with_password():
    cluster = Cluster(password="s3cret-pass")
    yield cluster
    cluster.stop()


def test_a_wrong_password_to_a_cluster_is_an_error_in_check_config_and_at_start(
        tmp_path, dest, cluster_with_password):
    right = cluster_with_password.url
    config = refuses_the_wrong_password(tmp_path, dest.port, right)
    assert cli(config, "suspend", "mfa", "--reason", "on the cluster").returncode == 0
    store = RedisStore(right)
    try:
        assert "mfa" in store.active()
    finally:
        store.close()


def test_a_gateway_starts_and_accepts_mail_with_its_cluster_away(tmp_path, dest):
    away = f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    port = free_port()
    config = write_config(tmp_path, dest.port, port, anomaly=BURST_RULE + redis_state(away))
    out = cli(config, "check-config")
    assert out.returncode == 0 and "does not answer now" in out.stderr, out.stderr
    gw = ServeProcess(config, port).start()
    try:
        assert send_as_mfa(port, 1)[0] == 250
        wait_until(lambda: len(dest.messages) == 1, timeout=15, what="delivered")
    finally:
        gw.stop()


def test_a_cluster_over_tls_with_the_wrong_ca_is_an_error_and_the_right_one_works(
        tmp_path, dest):
    """The nodes answer TLS only and talk TLS among themselves (rediss+cluster://)."""
    tls = Tls(tmp_path)
    cluster = Cluster(tls=tls)
    try:
        refuses_the_wrong_ca(tmp_path, dest.port, cluster.url, tls)
    finally:
        cluster.stop()
