"""The files the gateway shares with the operators' CLI: the group's to
change under the umask of a service (README, "Deploying")."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mailgw.state.journal import Journal
from tests.support.gateway import GatewayThread
from tests.support.mail import send_as_mfa
from tests.support.waiting import wait_until


@pytest.fixture
def service_umask() -> Iterator[None]:
    """A service's umask (0007), for this process while it lasts."""
    before = os.umask(0o007)
    yield
    os.umask(before)


def test_what_the_gateway_makes_is_its_groups_to_change_under_a_services_umask(
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
