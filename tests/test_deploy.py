"""Running mailgw as a service: the systemd units of contrib/, verified by
systemd itself and held to what a gateway on port 25 needs; the logrotate
snippet, run by logrotate on a copy of the logs; and the files the gateway
shares with the operators' CLI, the group's to change under the units'
umask."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mailgw.state.journal import Journal
from tests.conftest import REPO
from tests.support.gateway import GatewayThread
from tests.support.mail import send_as_mfa
from tests.support.needs import missing
from tests.support.waiting import wait_until

UNITS = REPO / "contrib" / "systemd"
EXECUTABLE = "/opt/mailgw/bin/mailgw"  # where README's "Deploying" installs it


def service(name: str) -> dict[str, str]:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    unit.read(UNITS / name, encoding="utf-8")
    return dict(unit["Service"])


@pytest.mark.parametrize("unit", ["mailgw.service", "mailgw@.service", "mailgw@1.service"])
def test_systemd_finds_nothing_to_say_about_the_units(tmp_path, unit):
    if shutil.which("systemd-analyze") is None:
        missing("systemd-analyze (Debian: systemd)")
    # systemd checks that ExecStart can run: here, this Python stands in for
    # the mailgw that Deploying installs
    for path in UNITS.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace(EXECUTABLE, sys.executable))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)],
                          capture_output=True, text=True, cwd=tmp_path)
    # an unknown key or a bad value is only a warning: any word is a failure
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_unit_runs_unprivileged_on_port_25_restarts_and_reloads_by_sighup():
    unit = service("mailgw.service")
    assert unit["ExecStart"].startswith(f"{EXECUTABLE} serve --config ")
    assert (unit["User"], unit["Group"]) == ("mailgw", "mailgw")
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert unit["ProtectSystem"] == "strict"
    assert (unit["StateDirectory"], unit["LogsDirectory"]) == ("mailgw", "mailgw")
    assert unit["Restart"] == "on-failure"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["UMask"] == "0007"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices",
                "RestrictSUIDSGID", "ProtectKernelTunables", "ProtectControlGroups"):
        assert unit[key] == "yes", key


def test_the_template_unit_is_the_single_one_but_for_each_instances_own_files():
    one, each = service("mailgw.service"), service("mailgw@.service")
    differ = {key for key in one.keys() | each.keys() if one.get(key) != each.get(key)}
    assert differ == {"ExecStart", "WorkingDirectory", "StateDirectory", "StandardOutput"}
    assert each["ExecStart"].endswith("--config /etc/mailgw/mailgw-%i.toml")
    assert (each["WorkingDirectory"], each["StateDirectory"]) == ("/var/lib/mailgw/%i",
                                                                 "mailgw/%i")
    assert each["StandardOutput"] == "append:/var/log/mailgw/mailgw-%i.log"


def test_logrotate_renames_event_logs_signals_once_and_empties_text_logs_in_place(tmp_path):
    if shutil.which("logrotate") is None:
        missing("logrotate (Debian: logrotate)")
    logs = tmp_path / "log"
    logs.mkdir()
    signalled = tmp_path / "signalled"
    # the snippet, on this test's directory, telling this test instead of systemd
    snippet = (REPO / "contrib" / "logrotate" / "mailgw").read_text()
    signal = "        systemctl kill -s USR1 'mailgw*.service' >/dev/null 2>&1 || true\n"
    assert signal in snippet
    conf = tmp_path / "mailgw.logrotate"
    conf.write_text(snippet.replace("/var/log/mailgw", str(logs)).replace(
        signal, f"        echo USR1 >> {signalled}\n"))
    for name in ("events.jsonl", "events-1.jsonl", "mailgw.log"):
        (logs / name).write_text(f"{name}: a line\n")
    (logs / "events.jsonl").chmod(0o660)
    held_open = open(logs / "mailgw.log", "a")  # noqa: SIM115 - as systemd holds it
    try:
        done = subprocess.run(["logrotate", "--force", "--state", str(tmp_path / "state"),
                               str(conf)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        held_open.write("after the rotation\n")
    finally:
        held_open.close()
    assert signalled.read_text() == "USR1\n"  # once for every event log
    rotated = {p.name.split("-20")[0]: p for p in logs.glob("*-20*")}
    assert sorted(rotated) == ["events-1.jsonl", "events.jsonl", "mailgw.log"]
    assert rotated["events.jsonl"].read_text() == "events.jsonl: a line\n"
    assert (logs / "events.jsonl").read_text() == ""  # a new one, as the old one was
    assert (logs / "events.jsonl").stat().st_mode & 0o777 == 0o660
    assert rotated["mailgw.log"].read_text() == "mailgw.log: a line\n"
    assert (logs / "mailgw.log").read_text() == "after the rotation\n"


@pytest.fixture
def service_umask() -> Iterator[None]:
    """The umask of the units (UMask=0007), for this process while it lasts."""
    before = os.umask(0o007)
    yield
    os.umask(before)


def test_what_the_gateway_makes_is_its_groups_to_change_under_the_units_umask(
        service_umask, make_config, dest, tmp_path):
    dest.faults.mail = "451 4.3.0 try again later"  # the message stays in the spool
    cfg = make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"},
                      gateway={"state_file": str(tmp_path / "state.db")})
    with GatewayThread(cfg) as gw:
        assert send_as_mfa(gw.port, 1)[0] == 250
        wait_until(lambda: dest.commands, what="a delivery attempt")
        Journal(cfg.gateway.spool_dir).close()  # the CLI's, with Redis
        made = [*(tmp_path / "spool").glob("*/*.msg"), tmp_path / "spool" / "lock",
                tmp_path / "spool" / "journal.db", tmp_path / "events.jsonl",
                *tmp_path.glob("state.db*")]
        assert len(made) == 7, made  # a message, the lock, 2 databases, -wal and -shm, the log
        assert {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in made} == {
            str(p.relative_to(tmp_path)): "0o660" for p in made}
