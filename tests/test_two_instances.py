"""Two gateways on one Redis state backend: a system's traffic is counted
across both, so spreading it over the instances does not keep it under a
rule; one suspension is recorded, one owner notice goes out, and both refuse
with 450."""

from __future__ import annotations

from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send_as_mfa
from tests.support.waiting import wait_until


def test_two_instances_count_together_and_suspend_once(make_config, dest, redis_server,
                                                       tmp_path):
    def config(name: str):
        return make_config(
            delivery={"relayhost": f"[127.0.0.1]:{dest.port}"}, anomaly={"rules": FOUR_CROSS},
            state={"backend": "redis", "redis_url": redis_server.url, "redis_prefix": "twins:"},
            gateway={"spool_dir": str(tmp_path / name / "spool"),
                     "event_log": str(tmp_path / name / "events.jsonl")})

    with GatewayThread(config("a")) as a, GatewayThread(config("b")) as b:
        # two messages each: under the rule on either instance alone
        for n, gw in enumerate((a, b, a, b)):
            assert send_as_mfa(gw.port, n)[0] == 250
        # the fourth crossed the shared count at b; its decision comes back
        # from Redis one round trip later, and reaches a through the store
        wait_until(lambda: b.gateway.guard.suspended("mfa"), what="b's decision")
        assert send_as_mfa(b.port, 98)[0] == 450
        wait_until(lambda: a.gateway.guard.suspended("mfa"), what="a learning of it")
        assert send_as_mfa(a.port, 99)[0] == 450
        store = a.gateway.store
        record = store.active()["mfa"]
        assert record.observed == 4 and record.evidence["counts"]["messages/600s"] == 4
        wait_until(lambda: any(m.rcpt_tos == ["postmaster@mfa.gov.kz"] for m in dest.messages),
                   timeout=10, what="the notice")
        # both instances have had several refresh rounds to send a second one
        wait_until(lambda: not store.pending_notices(), timeout=5)
        a.call(a.gateway.guard.refresh())
        b.call(b.gateway.guard.refresh())
        assert [h.action for h in store.history("mfa")] == ["suspended"]
        notices = sum(m.rcpt_tos == ["postmaster@mfa.gov.kz"] for m in dest.messages)
        assert notices == 1

        # an operator lifts it: both instances count afresh, from the lift on
        store.lift("mfa", by="operator", reason="password changed", at=a.gateway.clock.now())
        wait_until(lambda: not a.gateway.guard.suspended("mfa")
                   and not b.gateway.guard.suspended("mfa"), what="the lift on both")
        for n, gw in enumerate((a, b, a)):
            assert send_as_mfa(gw.port, 200 + n)[0] == 250
        assert send_as_mfa(b.port, 203)[0] == 250  # the fourth since the lift crosses again
        wait_until(lambda: b.gateway.guard.suspended("mfa"), what="the second suspension")
