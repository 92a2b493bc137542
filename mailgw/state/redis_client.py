"""One way to reach Redis from `state.redis_url`, for the state store (the
blocking client) and the shared windows (the asyncio one):

- `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix://path`:
  one server;
- `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`
  (`rediss+sentinel://`: TLS to the sentinels and the servers): a Sentinel
  group; the client asks the sentinels for the master of `service` and asks
  again when the master stops answering, so a gateway follows a failover
  without a restart. The password is the data servers'; sentinels that want
  one of their own take `state.sentinel_password`;
- `redis+cluster://[user:password@]host:port[,host:port...]`
  (`rediss+cluster://`: TLS): a Redis Cluster, reached through any of the
  nodes named; the client learns the slots from them and follows a slot to
  the node that holds it. A cluster has database 0 only. Every script
  touches the keys of one slot: a system's windows share its hash tag, the
  store's records the store's (redis_store.py).

TLS is checked against `state.tls_ca_file` when set (else the system's CA
store). A master the failover promoted may have lost the last writes: the
suspensions side writes back what it knows (store.confirm), so a stale or
empty master is re-seeded, never read as "lifted".
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.commands.core
import redis.sentinel

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://",
           "redis+cluster://", "rediss+cluster://")

# a call that waits longer than this is a Redis that is away: mail never waits on it
TIMEOUTS = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}

# what a call raises when Redis is away (or refuses): a cluster's client
# says it could reach no node with an exception of its own
UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.RedisError, redis.exceptions.RedisClusterException, OSError)


@dataclass(frozen=True)
class Group:
    """The servers a `redis+sentinel` or `redis+cluster` URL names."""

    kind: str  # "sentinel" or "cluster"
    hosts: list[tuple[str, int]]
    service: str  # a Sentinel group's master; "" for a cluster
    db: int
    username: str | None
    password: str | None
    tls: bool


def group(url: str) -> Group | None:
    """The Sentinel group or cluster `url` names; None for one server's URL.
    A malformed one raises ValueError saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    base, plus, kind = scheme.partition("+")
    if not sep or not plus or base not in ("redis", "rediss") or \
            kind not in ("sentinel", "cluster"):
        return None
    userinfo, at, hosts = rest.rpartition("@")
    hosts, _, path = hosts.partition("/")
    parts = [p for p in path.split("/") if p]
    if kind == "sentinel" and (not hosts or not parts or len(parts) > 2):
        raise ValueError(f"expected {scheme}://[user:password@]host:port[,host:port...]"
                         "/service[/db]")
    if kind == "cluster" and (not hosts or parts not in ([], ["0"])):
        raise ValueError(f"expected {scheme}://[user:password@]host:port[,host:port...] "
                         "(a cluster has database 0 only)")
    servers = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"expected host:port for each {kind} node, got {item!r}")
        servers.append((host.strip("[]"), int(port)))
    if kind == "sentinel" and len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"expected a database number after the service, got {parts[1]!r}")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    return Group(kind, servers, unquote(parts[0]) if kind == "sentinel" else "",
                 int(parts[1]) if len(parts) == 2 else 0,
                 unquote(username) or None, unquote(password) or None, base == "rediss")


def clustered(url: str) -> bool:
    named = group(url)
    return named is not None and named.kind == "cluster"


def _tls(ca_file: str | None) -> dict[str, Any]:
    return {"ssl_ca_certs": ca_file, "ssl_cert_reqs": "required"}


def _server_kwargs(url: str, ca_file: str | None) -> dict[str, Any]:
    return {**TIMEOUTS, **(_tls(ca_file) if ca_file and urlsplit(url).scheme == "rediss"
                           else {})}


def _group_kwargs(named: Group, ca_file: str | None,
                  sentinel_password: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the data servers' connection options, the sentinels')."""
    tls = {"ssl": True, **_tls(ca_file)} if named.tls else {}
    servers = {**TIMEOUTS, **tls, "username": named.username, "password": named.password}
    if named.kind == "sentinel":
        servers["db"] = named.db
    return servers, {**TIMEOUTS, **tls, "password": sentinel_password}


class _LazyCluster:
    """The blocking cluster client, made at its first use: RedisCluster asks
    the nodes for their slots as it is made, and a gateway starts (and the
    CLI opens its store) while the cluster is away."""

    def __init__(self, make: Callable[[], redis.RedisCluster]):
        self._make = make
        self._client: redis.RedisCluster | None = None
        self._making = threading.Lock()  # the store is called from a pool of threads

    def __getattr__(self, name: str) -> Any:
        with self._making:
            if self._client is None:
                self._client = self._make()
        return getattr(self._client, name)

    def register_script(self, script: str) -> redis.commands.core.Script:
        # as bytes: a Script of text asks its client for the encoding
        return redis.commands.core.Script(self, script.encode())  # type: ignore[arg-type]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def blocking_client(url: str, ca_file: str | None = None,
                    sentinel_password: str | None = None) -> Any:
    named = group(url)
    if named is None:
        return redis.Redis.from_url(url, **_server_kwargs(url, ca_file))
    servers, sentinels = _group_kwargs(named, ca_file, sentinel_password)
    if named.kind == "cluster":
        return _LazyCluster(lambda: redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in named.hosts], **servers))
    return redis.sentinel.Sentinel(named.hosts, sentinel_kwargs=sentinels,
                                   **servers).master_for(named.service)


def asyncio_client(url: str, ca_file: str | None = None, sentinel_password: str | None = None
                   ) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    named = group(url)
    if named is None:
        return redis.asyncio.Redis.from_url(url, **_server_kwargs(url, ca_file))
    servers, sentinels = _group_kwargs(named, ca_file, sentinel_password)
    if named.kind == "cluster":
        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in named.hosts],
            **servers)
    return redis.asyncio.sentinel.Sentinel(named.hosts, sentinel_kwargs=sentinels,
                                           **servers).master_for(named.service)


def misconfigured(error: BaseException) -> str | None:
    """Why `error` is Redis refusing this gateway for good (a wrong password,
    a certificate not trusted), to stop at start and in check-config; None
    for a Redis that is only away (then the gateway runs on without it)."""
    text = str(error)
    if isinstance(error, redis.AuthenticationError) or any(
            code in text for code in ("WRONGPASS", "NOAUTH", "invalid password",
                                      "invalid username-password")):
        return f"authentication failed ({text}): check the user and password in state.redis_url"
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or \
                "certificate verify failed" in str(seen):
            return f"TLS: Redis's certificate is not trusted ({text}): check state.tls_ca_file"
        seen = seen.__cause__ or seen.__context__
    return None


def probe(client: Any) -> str | None:
    """Blocking: `misconfigured` of a PING, or None (answered, or away)."""
    try:
        client.ping()
    except UNAVAILABLE as e:
        return misconfigured(e)
    return None
