"""Two gateways on one Redis state backend both cross a rule at once: one
suspension is recorded, one owner notice goes out, and both refuse with 450."""

from __future__ import annotations

from tests.support.gateway import GatewayThread
from tests.support.mail import FOUR_CROSS, send_as_mfa
from tests.support.waiting import wait_until


def test_two_instances_one_suspension_one_notice(make_config, dest, redis_server, tmp_path):
    def config(name: str):
        return make_config(
            delivery={"relayhost": f"[127.0.0.1]:{dest.port}"}, anomaly={"rules": FOUR_CROSS},
            state={"backend": "redis", "redis_url": redis_server.url, "redis_prefix": "twins:"},
            gateway={"spool_dir": str(tmp_path / name / "spool"),
                     "event_log": str(tmp_path / name / "events.jsonl")})

    with GatewayThread(config("a")) as a, GatewayThread(config("b")) as b:
        for n in range(4):  # each instance sees the system cross on its own
            assert send_as_mfa(a.port, n)[0] == 250
            assert send_as_mfa(b.port, 10 + n)[0] == 250
        assert send_as_mfa(a.port, 99)[0] == 450 and send_as_mfa(b.port, 99)[0] == 450
        store = a.gateway.store
        wait_until(lambda: "mfa" in store.active())
        wait_until(lambda: any(m.rcpt_tos == ["postmaster@mfa.gov.kz"] for m in dest.messages),
                   timeout=10, what="the notice")
        # both instances have had several refresh rounds to send a second one
        wait_until(lambda: not store.pending_notices(), timeout=5)
        a.call(a.gateway.guard.refresh())
        b.call(b.gateway.guard.refresh())
        assert [h.action for h in store.history("mfa")] == ["suspended"]
    assert sum(m.rcpt_tos == ["postmaster@mfa.gov.kz"] for m in dest.messages) == 1
