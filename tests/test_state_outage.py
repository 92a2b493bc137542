"""The Redis state backend goes away mid-run: mail keeps flowing, a
suspension decided meanwhile holds from memory, and it is recorded once Redis
is back. Never a 5xx because of the backend."""

from __future__ import annotations

from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send_as_mfa
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until


def test_redis_outage_loses_nothing_and_the_suspension_is_recorded_when_back(make_config, dest):
    redis = RedisServer().start()
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      anomaly={"rules": FOUR_CROSS},
                      state={"backend": "redis", "redis_url": redis.url})
    try:
        with GatewayThread(cfg) as gw:
            assert send_as_mfa(gw.port, 0)[0] == 250
            port = redis.port
            redis.stop()  # the state backend is gone
            assert [send_as_mfa(gw.port, n)[0] for n in range(1, 4)] == [250, 250, 250]
            assert send_as_mfa(gw.port, 9)[0] == 450  # decided and enforced from memory
            wait_until(lambda: len([m for m in dest.messages if m.mail_from == "a@mfa.gov.kz"])
                       >= 3, what="mail delivered during the outage")
            redis = RedisServer()
            redis.port = port
            redis.start()  # back, empty: the suspension is written again
            wait_until(lambda: "mfa" in gw.gateway.store.active(), timeout=10,
                       what="the suspension recorded in Redis")
            assert send_as_mfa(gw.port, 10)[0] == 450
    finally:
        redis.stop()
