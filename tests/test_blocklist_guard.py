"""The blocklist guard against a real DNSBL (rbldnsd on a loopback port) and
a real destination that sees each connection's source address: a listing of
one egress address is detected within one check, the operators get an alert
naming the systems that sent from it, delivery moves to the other address;
the delisting is detected and both are used again. And a destination that
refuses one system's mail with a blocklist text gets that system suspended."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.support.gateway import GatewayThread
from tests.support.mail import send_as_mfa
from tests.support.process import free_port
from tests.support.rbldnsd import Rbldnsd
from tests.support.waiting import wait_until
from tests.test_cli_suspensions import cli
from tests.test_serve_e2e import write_config

EGRESS = ["127.0.0.2", "127.0.0.3"]


@pytest.fixture
def dnsbl():
    server = Rbldnsd().start()
    yield server
    server.stop()


def sources(dest, since: int) -> set[str]:
    return {m.peer[0] for m in dest.messages[since:] if m.mail_from == "a@mfa.gov.kz"}


def test_a_listed_egress_address_is_avoided_until_delisted(make_config, dest, dnsbl):
    cfg = make_config(
        delivery={"relayhost": f"[127.0.0.1]:{dest.port}", "source_addresses": EGRESS,
                  "max_messages_per_connection": 1},
        gateway={"operators": ["noc@gateway.gov.kz"]}, anomaly={"rules": []},
        dnsbl={"zones": [dnsbl.zone], "resolver": [f"127.0.0.1:{dnsbl.port}"],
               "interval": "0.5s"})
    with GatewayThread(cfg) as gw:
        for n in range(6):
            assert send_as_mfa(gw.port, n)[0] == 250
        wait_until(lambda: len(sources(dest, 0)) == 2, what="both egress addresses in use")

        dnsbl.list("127.0.0.2")
        wait_until(lambda: gw.gateway.egress.listed == {"127.0.0.2"}, timeout=5,
                   what="the listing")
        alert = wait_until(lambda: next((m for m in dest.messages
                                         if m.rcpt_tos == ["noc@gateway.gov.kz"]), None),
                           timeout=10, what="the operators' alert")
        text = alert.data.decode()
        assert "127.0.0.2 listed on bl.test" in text and "Listed for sending spam" in text
        assert "mfa" in text.split("likely cause")[1]  # it sent through that address
        before = len(dest.messages)
        for n in range(6):
            assert send_as_mfa(gw.port, 10 + n)[0] == 250
        wait_until(lambda: len([m for m in dest.messages[before:]
                                if m.mail_from == "a@mfa.gov.kz"]) == 6)
        assert sources(dest, before) == {"127.0.0.3"}
        listings = gw.gateway.store.dnsbl_listings()
        assert {(e["address"], e["listed"]) for e in listings} == {
            ("127.0.0.2", True), ("127.0.0.3", False)}
        metrics = urllib.request.urlopen(gw.http + "/metrics").read().decode()
        assert 'mailgw_dnsbl_listed{address="127.0.0.2",zone="bl.test"} 1.0' in metrics

        dnsbl.list()
        wait_until(lambda: not gw.gateway.egress.listed, timeout=5, what="the delisting")
        before = len(dest.messages)
        for n in range(6):
            assert send_as_mfa(gw.port, 20 + n)[0] == 250
        wait_until(lambda: len(sources(dest, before)) == 2, what="both addresses again")
        actions = [(h.action, h.details.get("address")) for h in gw.gateway.store.history()]
    assert actions == [("dnsbl_listed", "127.0.0.2"), ("dnsbl_delisted", "127.0.0.2")]


def test_every_address_listed_keeps_mail_flowing_and_says_so(make_config, dest, dnsbl):
    dnsbl.list(*EGRESS)
    cfg = make_config(
        delivery={"relayhost": f"[127.0.0.1]:{dest.port}", "source_addresses": EGRESS},
        gateway={"operators": ["noc@gateway.gov.kz"]}, anomaly={"rules": []},
        dnsbl={"zones": [dnsbl.zone], "resolver": [f"127.0.0.1:{dnsbl.port}"],
               "interval": "0.5s"})
    with GatewayThread(cfg) as gw:
        wait_until(lambda: gw.gateway.egress.listed == set(EGRESS), timeout=5)
        assert send_as_mfa(gw.port, 0)[0] == 250
        wait_until(lambda: sources(dest, 0), what="delivery from a listed address")
        wait_until(lambda: any("every egress address is listed" in m.data.decode()
                               for m in dest.messages), timeout=10, what="the loud alert")


def test_blocklist_refusals_suspend_the_system_that_draws_them(make_config, dest):
    rule = {"name": "blocklist_rate_1h", "kind": "ratio", "metric": "blocklist_rejections",
            "per": "attempts", "window": "1h", "threshold": 0.5, "min_sample": 3}
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      anomaly={"rules": [rule]})
    for n in range(3):
        dest.faults.rcpt[f"u{n}@example.com"] = (
            "554 5.7.1 Service unavailable; message blocked using zen.spamhaus.org")
    with GatewayThread(cfg) as gw:
        for n in range(3):
            assert send_as_mfa(gw.port, n)[0] == 250
        wait_until(lambda: gw.gateway.suspensions.suspended("mfa"), timeout=10,
                   what="the suspension")
        assert gw.gateway.suspensions.suspended("mfa").rule == "blocklist_rate_1h"
        assert send_as_mfa(gw.port, 9)[0] == 450


def test_the_dnsbl_command_looks_up_now(tmp_path, dest, dnsbl):
    dnsbl.list("127.0.0.3")
    config = write_config(
        tmp_path, dest.port, free_port(), delivery=f"source_addresses = {json.dumps(EGRESS)}",
        extra=f'[dnsbl]\nzones = ["{dnsbl.zone}"]\nresolver = ["127.0.0.1:{dnsbl.port}"]\n')
    out = cli(config, "dnsbl", "--json")
    assert out.returncode == 4, out.stderr  # something is listed
    now = {r["address"]: (r["now"], r["reason"]) for r in json.loads(out.stdout)}
    assert now == {"127.0.0.2": ("clean", ""),
                   "127.0.0.3": ("listed", "Listed for sending spam, see http://bl.test/127.0.0.3")}


def test_each_dnsbl_resolver_is_asked_on_its_own_port(tmp_path, dest, dnsbl):
    dnsbl.list("127.0.0.3")
    # the first answers nothing (no server on its port); the second is the list
    resolvers = [f"127.0.0.9:{free_port()}", f"127.0.0.1:{dnsbl.port}"]
    config = write_config(
        tmp_path, dest.port, free_port(), delivery=f"source_addresses = {json.dumps(EGRESS)}",
        extra=f'[dnsbl]\nzones = ["{dnsbl.zone}"]\nresolver = {json.dumps(resolvers)}\n')
    out = cli(config, "dnsbl", "--json")
    assert out.returncode == 4, out.stdout + out.stderr
    assert {r["address"]: r["now"] for r in json.loads(out.stdout)} == {
        "127.0.0.2": "clean", "127.0.0.3": "listed"}
