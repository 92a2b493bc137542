"""A real redis-server on a free loopback port, nothing kept on disk: one
started again on the same port comes back empty, as a Redis restarted
without persistence (or a failover to an empty replica) does."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.support.process import Daemon, free_port
from tests.support.waiting import wait_until


class RedisServer(Daemon):
    def __init__(self, port: int | None = None, *options: str, password: str | None = None,
                 client: dict[str, object] | None = None) -> None:
        """`options`: more redis-server arguments (a replica's --replicaof,
        TLS); `password`: its requirepass; `client`: how the test itself
        connects (TLS options)."""
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mailgw-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.options, self.password = list(options), password
        self.client = {**(client or {}), "password": password}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "install Debian's redis-server"
        auth = ["--requirepass", self.password, "--masterauth", self.password] \
            if self.password else []
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), *auth, *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis("127.0.0.1", self.port, **self.client)  # type: ignore[arg-type]

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, timeout=10, what="redis-server")
        client.close()
        return self


class Sentinel(Daemon):
    """One redis-sentinel watching the master `service` on `master_port`;
    it rewrites its config file as sentinels do."""

    def __init__(self, master_port: int, service: str = "mymaster", quorum: int = 2) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mailgw-sentinel-"))
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "sentinel.conf").write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 5000\n"
            f"sentinel parallel-syncs {service} 1\n")

    def start(self) -> Sentinel:
        binary = shutil.which("redis-sentinel")
        assert binary, "install Debian's redis-sentinel"
        self.proc = subprocess.Popen([binary, str(self.dir / "sentinel.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, timeout=10, what="redis-sentinel")
        client.close()
        return self


class SentinelGroup:
    """A master, a replica and three sentinels, on loopback."""

    def __init__(self) -> None:
        self.master = RedisServer().start()
        self.replica = RedisServer(None, "--replicaof", "127.0.0.1",
                                   str(self.master.port)).start()
        self.sentinels = [Sentinel(self.master.port).start() for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/mymaster/0"

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        client = redis.Redis(port=self.sentinels[0].port)
        try:
            return int(client.sentinel_get_master_addr_by_name("mymaster")[1])
        finally:
            client.close()

    def stop(self) -> None:
        for daemon in [*self.sentinels, self.replica, self.master]:
            daemon.stop()
