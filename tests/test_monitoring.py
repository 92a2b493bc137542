"""The monitoring contrib/ ships: Prometheus alerting rules that promtool
accepts and whose unit tests pass, a Grafana dashboard whose queries are
PromQL, and neither naming a metric (or a spool state) that a running
gateway does not export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from tests.conftest import REPO
from tests.support.gateway import GatewayThread
from tests.support.mail import send_as_mfa
from tests.support.needs import missing
from tests.support.waiting import wait_until

RULES = REPO / "contrib" / "prometheus" / "mailgw.rules.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "mailgw.rules.test.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "mailgw.json"
SELECTOR = re.compile(r"\b(mailgw_\w+)(?:\{([^}]*)\})?")


def promtool(*args: str | Path, cwd: Path | None = None) -> str:
    if shutil.which("promtool") is None:
        missing("promtool (Debian: prometheus)")
    done = subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_promtool_accepts_the_alerting_rules_and_their_unit_tests_pass():
    assert "SUCCESS" in promtool("check", "rules", RULES)
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_every_dashboard_query_is_promql(tmp_path):
    # promtool checks expressions only in rules: each query becomes one
    queries = dashboard_queries()
    assert queries
    rules = tmp_path / "dashboard.rules.yml"
    rules.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": q.replace("$instance", ".*")}
        for n, q in enumerate(queries)]}]}))
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", rules)


def test_rules_and_dashboard_name_only_what_a_running_gateway_exports(gateway):
    assert send_as_mfa(gateway.port, 1)[0] == 250  # counters appear once counted
    wait_until(lambda: "mailgw_deliveries_total{" in scrape(gateway))
    text = scrape(gateway)
    exported: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        exported |= ({f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram"
                     else {name})
    samples: dict[str, dict[str, set[str]]] = {}  # metric -> label -> values seen
    for name, labels in re.findall(r"^(mailgw_\w+)\{([^}]*)\}", text, re.MULTILINE):
        for label, value in re.findall(r'(\w+)="([^"]*)"', labels):
            samples.setdefault(name, {}).setdefault(label, set()).add(value)
    used = [RULES.read_text(), *dashboard_queries()]
    named = {name for expr in used for name, _ in SELECTOR.findall(expr)}
    assert named - exported == set()
    assert {"mailgw_queue_messages", "mailgw_spool_free_bytes",
            "mailgw_queue_oldest_message_age_seconds"} <= named
    # a label value the gateway has shown must be one it shows, e.g. the spool
    # states as the CLI names them
    wrong = [(name, label, value) for expr in used for name, matchers in SELECTOR.findall(expr)
             for label, value in re.findall(r'(\w+)="([^"]*)"', matchers)
             if label in samples.get(name, {}) and value not in samples[name][label]]
    assert wrong == []
    assert samples["mailgw_queue_messages"]["state"] == {"queued", "delivering", "held",
                                                         "set aside"}


def scrape(gateway: GatewayThread) -> str:
    with urllib.request.urlopen(gateway.http + "/metrics", timeout=10) as response:
        return response.read().decode()
