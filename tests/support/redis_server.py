"""A real redis-server on a free loopback port, nothing kept on disk: one
started again on the same port comes back empty, as a Redis restarted
without persistence (or a failover to an empty replica) does."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis
import redis.cluster
import trustme

from tests.support.process import Daemon, free_port
from tests.support.waiting import wait_until


class Tls:
    """A CA and the certificate for 127.0.0.1 it signed (`redis.pem`, key
    included), and a CA that signed nothing (`other-ca.pem`), in `dir`."""

    def __init__(self, dir: Path) -> None:
        ca = trustme.CA()
        ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
            str(dir / "redis.pem"))
        ca.cert_pem.write_to_path(str(dir / "ca.pem"))
        trustme.CA().cert_pem.write_to_path(str(dir / "other-ca.pem"))
        self.ca, self.other_ca = dir / "ca.pem", dir / "other-ca.pem"
        # a server's (and a sentinel's) settings; to its replicas and masters over TLS too
        self.settings = {"tls-cert-file": dir / "redis.pem", "tls-key-file": dir / "redis.pem",
                         "tls-ca-cert-file": self.ca, "tls-auth-clients": "no",
                         "tls-replication": "yes"}
        self.client = {"ssl": True, "ssl_ca_certs": str(self.ca)}

    def server(self, *options: str, password: str | None = None) -> RedisServer:
        """A redis-server (not started) answering TLS only."""
        port = free_port()
        return RedisServer(port, "--port", "0", "--tls-port", str(port), *options,
                           *(x for k, v in self.settings.items() for x in (f"--{k}", str(v))),
                           password=password, client=self.client)


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

    def __init__(self, master_port: int, service: str = "mymaster", quorum: int = 2,
                 tls: Tls | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mailgw-sentinel-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = tls.client if tls else {}
        ports = f"port 0\ntls-port {self.port}\n" + "".join(
            f"{k} {v}\n" for k, v in tls.settings.items()) if tls else f"port {self.port}\n"
        (self.dir / "sentinel.conf").write_text(
            f"{ports}bind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} {quorum}\n"
            f"sentinel down-after-milliseconds {service} 1000\n"
            f"sentinel failover-timeout {service} 5000\n"
            f"sentinel parallel-syncs {service} 1\n")

    def start(self) -> Sentinel:
        binary = shutil.which("redis-sentinel")
        assert binary, "install Debian's redis-sentinel"
        self.proc = subprocess.Popen([binary, str(self.dir / "sentinel.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis("127.0.0.1", self.port, **self.client)  # type: ignore[arg-type]

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, timeout=10, what="redis-sentinel")
        client.close()
        return self


class SentinelGroup:
    """A master, a replica and three sentinels, on loopback; with `tls`, all
    of them answer TLS only."""

    def __init__(self, tls: Tls | None = None) -> None:
        self.tls = tls
        self.master = (tls.server() if tls else RedisServer()).start()
        follow = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replica = (tls.server(*follow) if tls else RedisServer(None, *follow)).start()
        self.sentinels = [Sentinel(self.master.port, tls=tls).start() for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"{'rediss' if self.tls else 'redis'}+sentinel://{hosts}/mymaster/0"

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        client = redis.Redis("127.0.0.1", self.sentinels[0].port,
                             **self.sentinels[0].client)  # type: ignore[arg-type]
        try:
            return int(client.sentinel_get_master_addr_by_name("mymaster")[1])
        finally:
            client.close()

    def stop(self) -> None:
        for daemon in [*self.sentinels, self.replica, self.master]:
            daemon.stop()


class Cluster:
    """Three masters in one Redis Cluster (`redis-cli --cluster create`),
    each owning a third of the slots, on loopback; `password`: theirs;
    with `tls`, the nodes answer TLS only and talk TLS among themselves."""

    def __init__(self, masters: int = 3, password: str | None = None,
                 tls: Tls | None = None) -> None:
        # the bus port named: port + 10000 (the default) may be out of range
        options = ("--cluster-enabled", "yes",
                   "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
        self.nodes = []
        for _ in range(masters):
            bus = ("--cluster-port", str(free_port()))
            self.nodes.append((tls.server(*options, *bus, "--tls-cluster", "yes",
                                          password=password) if tls else
                               RedisServer(None, *options, *bus, password=password)).start())
        self.password, self.tls = password, tls
        self.client = {"password": password, **(tls.client if tls else {})}
        cli = shutil.which("redis-cli")
        assert cli, "install Debian's redis-tools (with redis-server)"
        secure = ["--tls", "--cacert", str(tls.ca)] if tls else []
        subprocess.run([cli, *(["-a", password] if password else []), *secure,
                        "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.formed, timeout=20, what="the cluster to form")

    def formed(self) -> bool:
        """Every node up and serving all the slots."""
        for node in self.nodes:
            client = redis.Redis("127.0.0.1", node.port, **self.client)  # type: ignore[arg-type]
            try:
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
            except redis.ConnectionError:
                return False
            finally:
                client.close()
        return True

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"{'rediss' if self.tls else 'redis'}+cluster://{auth}" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node_of(self, key: str) -> RedisServer:
        """The master that holds `key`'s slot."""
        client = redis.cluster.RedisCluster("127.0.0.1", self.nodes[0].port,
                                            **self.client)  # type: ignore[arg-type]
        try:
            port = client.get_node_from_key(key).port
        finally:
            client.close()
        return next(n for n in self.nodes if n.port == port)

    def keys(self, pattern: str) -> dict[str, RedisServer]:
        """The keys matching `pattern`, each with the node it is on."""
        found = {}
        for node in self.nodes:
            client = redis.Redis("127.0.0.1", node.port, **self.client)  # type: ignore[arg-type]
            try:
                found.update({k.decode(): node for k in client.scan_iter(pattern, count=1000)})
            finally:
                client.close()
        return found

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
