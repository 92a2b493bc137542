"""The Redis state backend goes away mid-run: mail keeps flowing, a
suspension decided meanwhile holds from memory, and it is recorded once Redis
is back. Never a 5xx because of the backend.

Redis that comes back empty (restarted without persistence, a failover to an
empty replica) never means "everything lifted": every suspension a gateway
knows, from memory or from its journal beside the spool, is written back with
its id, and its held mail stays held; audit entries made meanwhile reach the
store when it is back. The outage is told in two log lines, not a traceback a
second."""

from __future__ import annotations

import json
import logging
import re

from mailgw.state.redis_store import RedisStore
from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send, send_as_mfa
from tests.support.process import ServeProcess, free_port
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import BURST_RULE, cli, mail_code
from tests.test_serve_e2e import write_config

MOJ = """
[[systems]]
id = "moj"
name = "Ministry of Justice"
owners = ["postmaster@moj.gov.kz"]
networks = ["127.0.0.2/32"]
sender_domains = ["moj.gov.kz"]
"""


def redis_state(url: str) -> str:
    return f'[state]\nbackend = "redis"\nredis_url = "{url}"\n'


def send_as_moj(port: int, n: int) -> int:
    return send(port, n, "a@moj.gov.kz", source="127.0.0.2")[0]


def outage_lines(log: str) -> list[str]:
    return re.findall(r"the state store \(.*?\) (unavailable|back)", log)


def test_redis_outage_loses_nothing_and_the_suspension_is_recorded_when_back(make_config, dest):
    redis = RedisServer().start()
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      anomaly={"rules": FOUR_CROSS},
                      state={"backend": "redis", "redis_url": redis.url})
    try:
        with GatewayThread(cfg) as gw:
            assert send_as_mfa(gw.port, 0)[0] == 250
            redis.stop()  # the state backend is gone
            assert [send_as_mfa(gw.port, n)[0] for n in range(1, 4)] == [250, 250, 250]
            assert send_as_mfa(gw.port, 9)[0] == 450  # decided and enforced from memory
            wait_until(lambda: len([m for m in dest.messages if m.mail_from == "a@mfa.gov.kz"])
                       >= 3, what="mail delivered during the outage")
            redis = RedisServer(redis.port).start()  # back, empty: the suspension is written again
            wait_until(lambda: "mfa" in gw.gateway.store.active(), timeout=10,
                       what="the suspension recorded in Redis")
            assert send_as_mfa(gw.port, 10)[0] == 450
    finally:
        redis.stop()


def test_held_entries_made_while_redis_is_down_reach_it_and_the_outage_is_told_once(
        make_config, dest, caplog):
    dest.faults.data = "451 4.3.0 not now"  # keep the mail spooled, to be held
    redis = RedisServer().start()
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      anomaly={"rules": FOUR_CROSS},
                      state={"backend": "redis", "redis_url": redis.url})
    try:
        with caplog.at_level(logging.INFO, logger="mailgw"), GatewayThread(cfg) as gw:
            assert [send_as_mfa(gw.port, n)[0] for n in range(3)] == [250] * 3
            redis.stop()
            assert send_as_mfa(gw.port, 3)[0] == 250  # crosses the rule while Redis is away
            spool = gw.gateway.spool
            wait_until(lambda: len(spool.ids("hold")) == 4, timeout=15, what="4 messages held")
            redis = RedisServer(redis.port).start()
            store = gw.gateway.store
            wait_until(lambda: [h.action for h in store.history("mfa")]
                       == ["suspended", "held", "held", "held", "held"], timeout=10,
                       what="the suspension and the held entries in Redis")
            wait_until(lambda: outage_lines(caplog.text) == ["unavailable", "back"],
                       what="the end of the outage told")
    finally:
        redis.stop()
    assert outage_lines(caplog.text) == ["unavailable", "back"]
    assert not [r for r in caplog.records if r.exc_info]  # lines, not tracebacks


def test_redis_back_empty_keeps_every_suspension_its_id_and_its_held_mail(tmp_path, dest):
    dest.faults.data = "451 4.3.0 not now"  # keep the mail spooled, to be held
    redis = RedisServer().start()
    port = free_port()
    config = write_config(tmp_path, dest.port, port, anomaly=BURST_RULE,
                          extra=MOJ + redis_state(redis.url))
    hold = tmp_path / "spool" / "hold"
    gw = ServeProcess(config, port)
    store = RedisStore(redis.url)
    try:
        gw.start()
        assert send_as_moj(port, 0) == 250  # waits in the queue, deferred
        assert [send_as_mfa(port, n)[0] for n in range(1, 5)] == [250] * 4  # the 4th crosses
        out = cli(config, "suspend", "moj", "--reason", "phishing reported", "--operator", "alice")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: len(list(hold.glob("*.msg"))) == 5, timeout=15,
                   what="both systems' mail held")
        wait_until(lambda: store.active().keys() == {"mfa", "moj"})
        before = store.active()
        assert before["mfa"].by == "auto" and before["moj"].by == "alice"

        redis.stop()
        wait_until(lambda: outage_lines(gw.log.read_text()) == ["unavailable"],
                   what="the gateway finding Redis gone")
        assert send_as_mfa(port, 10)[0] == 450 and send_as_moj(port, 11) == 450
        victim = json.loads(cli(config, "queue", "list", "--system", "mfa", "--state", "held",
                                "--json").stdout)[0]["id"]
        out = cli(config, "queue", "purge", victim, "--reason", "sent by mistake",
                  "--operator", "carol")
        assert out.returncode == 0, out.stderr  # done by the gateway; its audit entry waits

        redis = RedisServer(redis.port).start()  # back, empty
        wait_until(lambda: store.active().keys() == {"mfa", "moj"}, timeout=10,
                   what="both suspensions written back")
        assert store.active() == before  # the same ids, by, rule, reason, since, evidence
        assert send_as_mfa(port, 12)[0] == 450 and send_as_moj(port, 13) == 450
        assert len(list(hold.glob("*.msg"))) == 4  # nothing released
        wait_until(lambda: any(h["action"] == "purged"
                               for h in json.loads(cli(config, "history", "--json").stdout)),
                   timeout=10, what="the purge written from the outbox")
        history = json.loads(cli(config, "history", "--json").stdout)
        assert sorted((h["system"], h["action"], h["by"]) for h in history) == [
            ("mfa", "purged", "carol"), ("mfa", "restored", "gateway"),
            ("moj", "restored", "gateway")]
        assert {h["details"]["suspension"] for h in history if h["action"] == "restored"} == {
            before["mfa"].id, before["moj"].id}

        # a real lift is still obeyed: the record is there, lifted
        dest.faults.data = None
        out = cli(config, "lift", "moj", "--reason", "password reset", "--operator", "bob")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: any(m.mail_from == "a@moj.gov.kz" for m in dest.messages),
                   timeout=10, what="moj's held mail delivered")
        assert send_as_moj(port, 14) == 250 and send_as_mfa(port, 15)[0] == 450
        wait_until(lambda: outage_lines(gw.log.read_text()) == ["unavailable", "back"],
                   what="the end of the outage in the log")
        assert gw.terminate() == 0
    finally:
        gw.stop()
        redis.stop()
        store.close()
    log = gw.log.read_text()
    assert outage_lines(log) == ["unavailable", "back"] and "Traceback" not in log


def test_a_gateway_restarted_while_redis_is_down_still_refuses_and_writes_it_back(tmp_path,
                                                                                 dest):
    redis = RedisServer().start()
    port = free_port()
    config = write_config(tmp_path, dest.port, port, extra=redis_state(redis.url))
    gw = ServeProcess(config, port)
    store = RedisStore(redis.url)
    try:
        gw.start()
        out = cli(config, "suspend", "mfa", "--reason", "audit", "--operator", "alice")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: mail_code(port) == 450, timeout=5, what="450 after suspend")
        record = store.active()["mfa"]
        assert gw.terminate() == 0
        redis.stop()
        gw.start()  # knows the suspension from its journal, not from Redis
        assert mail_code(port) == 450
        wait_until(lambda: outage_lines(gw.log.read_text()) == ["unavailable"],
                   what="the gateway finding Redis gone")
        redis = RedisServer(redis.port).start()  # back, empty
        wait_until(lambda: "mfa" in store.active(), timeout=10, what="the suspension written back")
        assert store.active()["mfa"] == record
        assert mail_code(port) == 450
        wait_until(lambda: outage_lines(gw.log.read_text()) == ["unavailable", "back"],
                   what="the end of the outage in the log")
    finally:
        gw.stop()
        redis.stop()
        store.close()
    assert "Traceback" not in gw.log.read_text()
