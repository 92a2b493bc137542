"""Two `mailgw serve` instances on one real Redis: a system's traffic is
counted across both, so spreading it over the instances does not keep it
under a rule; one suspension is recorded, one owner notice goes out, both
refuse with 450; after an operator's lift both count afresh. With
`reuse_port` they share one SMTP port on one host, one core each."""

from __future__ import annotations

import json

from mailgw.state.redis_store import RedisStore
from tests.support.mail import send_as_mfa
from tests.support.process import ServeProcess, free_port
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import BURST_RULE, cli, mail_code
from tests.test_serve_e2e import NO_RULES, two_gateways, write_config


def test_two_instances_count_together_and_suspend_once(dest, redis_server, tmp_path):
    state = f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n' \
            'redis_prefix = "twins:"\n'
    gateways = two_gateways(tmp_path, dest.port, BURST_RULE + state)
    a, b = gateways
    store = RedisStore(redis_server.url, "twins:")

    def notices() -> int:
        return sum(m.rcpt_tos == ["postmaster@mfa.gov.kz"] for m in dest.messages)

    try:
        a.start(), b.start()
        # two messages each: under the rule on either instance alone
        for n, gw in enumerate((a, b, a, b)):
            assert send_as_mfa(gw.port, n)[0] == 250
        # the fourth crossed the shared count at b; the decision comes back
        # from Redis one round trip later, reaches the store, and a from there
        wait_until(lambda: "mfa" in store.active(), what="the suspension recorded")
        assert mail_code(b.port) == 450
        wait_until(lambda: mail_code(a.port) == 450, timeout=5, what="a refusing too")
        record = store.active()["mfa"]
        assert record.observed == 4 and record.evidence["counts"]["messages/600s"] == 4
        wait_until(lambda: notices() == 1, timeout=10, what="the notice")
        # both instances have had several refresh rounds to send a second one
        wait_until(lambda: not store.pending_notices(), timeout=5)
        # (the crossing message may be held or already on its way: a round trip)
        assert [h.action for h in store.history("mfa") if h.action != "held"] == ["suspended"]

        # an operator lifts it: both instances count afresh, from the lift on
        assert cli(a.config_path, "lift", "mfa", "--reason", "password changed").returncode == 0
        wait_until(lambda: mail_code(a.port) == 250 and mail_code(b.port) == 250, timeout=5,
                   what="the lift on both")
        for n, gw in enumerate((a, b, a, b)):  # the fourth since the lift crosses again
            assert send_as_mfa(gw.port, 200 + n)[0] == 250
        wait_until(lambda: "mfa" in store.active(), what="the second suspension")
        wait_until(lambda: notices() == 3, timeout=10, what="lift and second notices")
    finally:
        a.stop(), b.stop()
        store.close()
    assert notices() == 3


def test_two_instances_share_one_port(dest, redis_server, tmp_path):
    state = f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"\n' \
            'redis_prefix = "shared-port:"\n'
    port = free_port()
    gateways = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = write_config(tmp_path / name, dest.port, port, anomaly=NO_RULES + state,
                              gateway="reuse_port = true")
        gateways.append(ServeProcess(config, port))

    def accepted(gw: ServeProcess) -> set[str]:
        log = gw.config_path.parent / "events.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        return {e["queue_id"] for e in map(json.loads, lines) if e["event"] == "accepted"}

    try:
        for gw in gateways:
            gw.start()  # returns once the port answers, which the first one already does
            wait_until(lambda gw=gw: "mailgw listening" in gw.log.read_text(), timeout=20,
                       what="each instance listening")
        # a connection goes to either instance; 40 leave one of them idle
        # with a chance of 2**-39
        queued = set()
        for n in range(40):
            code, text = send_as_mfa(port, n)
            assert code == 250, text
            queued.add(text.rsplit(" ", 1)[1])
        wait_until(lambda: accepted(gateways[0]) | accepted(gateways[1]) == queued,
                   timeout=5, what="both event logs flushed")
        assert accepted(gateways[0]) and accepted(gateways[1])
        wait_until(lambda: len(dest.messages) == 40, timeout=10, what="every message relayed")
    finally:
        for gw in gateways:
            gw.stop()
