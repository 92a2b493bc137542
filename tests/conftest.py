from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailgw.config import Config
from tests.support.destination import Destination
from tests.support.dns import DNSTestServer
from tests.support.gateway import GatewayThread
from tests.support.redis_server import Cluster, RedisServer

REPO = Path(__file__).resolve().parent.parent

MFA: dict[str, Any] = {
    "id": "mfa",
    "name": "Ministry of Foreign Affairs",
    "owners": ["postmaster@mfa.gov.kz"],
    "networks": ["127.0.0.1/32", "::1/128"],
    "sender_domains": ["mfa.gov.kz"],
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """A config with one system (mfa, 127.0.0.1), spool in tmp_path,
    ingress on a free loopback port; keyword sections override."""

    def make(**sections: Any) -> Config:
        raw = _merge({
            "gateway": {
                "hostname": "gw.test",
                "listen": ["127.0.0.1:0"],
                "spool_dir": str(tmp_path / "spool"),
                "event_log": str(tmp_path / "events.jsonl"),
                "event_loop": "asyncio",
                "flush_interval": 0,  # tests read the event log as it is written
            },
            "delivery": {"first_retry": "1s", "max_retry_interval": "2s", "connect_timeout": "5s",
                         "command_timeout": "10s"},
            "http": {"listen": ["127.0.0.1:0"]},
            "systems": [MFA],
        }, sections)
        return Config.model_validate(raw).resolve_paths(tmp_path)

    return make


@pytest.fixture
def dest() -> Iterator[Destination]:
    with Destination() as d:
        yield d


@pytest.fixture
def dns() -> Iterator[DNSTestServer]:
    with DNSTestServer() as d:
        yield d


@pytest.fixture
def relay_config(make_config: Callable[..., Config], dest: Destination) -> Config:
    """All mail goes to the test destination."""
    return make_config(delivery={"relayhost": f"[127.0.0.1]:{dest.port}"})


@pytest.fixture
def gateway(relay_config: Config) -> Iterator[GatewayThread]:
    with GatewayThread(relay_config) as gw:
        yield gw


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    yield cluster
    cluster.stop()
