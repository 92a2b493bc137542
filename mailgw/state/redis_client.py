"""One way to reach Redis from `state.redis_url`, for the state store (the
blocking client) and the shared windows (the asyncio one):

- `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix://path`:
  one server;
- `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`:
  a Sentinel group (without TLS, for now: inside one site's network); the client asks the
  sentinels for the master of `service` and asks again when the master
  stops answering, so a gateway follows a failover without a restart. The
  password is the data servers'; sentinels that want one of their own take
  `state.sentinel_password`.

TLS is checked against `state.tls_ca_file` when set (else the system's CA
store). A master the failover promoted may have lost the last writes: the
suspensions side writes back what it knows (store.confirm), so a stale or
empty master is re-seeded, never read as "lifted".
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://")

# a call that waits longer than this is a Redis that is away: mail never waits on it
TIMEOUTS = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}


@dataclass(frozen=True)
class SentinelGroup:
    sentinels: list[tuple[str, int]]
    service: str
    db: int
    username: str | None
    password: str | None


def sentinel_group(url: str) -> SentinelGroup | None:
    """The Sentinel group `url` names; None for a plain server's URL. A
    malformed one raises ValueError saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "redis+sentinel":
        return None
    userinfo, at, hosts = rest.rpartition("@")
    hosts, _, path = hosts.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts or len(parts) > 2:
        raise ValueError("expected redis+sentinel://[user:password@]host:port[,host:port...]"
                         "/service[/db]")
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"expected host:port for each sentinel, got {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"expected a database number after the service, got {parts[1]!r}")
    username, _, password = userinfo.partition(":") if at else ("", "", "")
    return SentinelGroup(sentinels, unquote(parts[0]), int(parts[1]) if len(parts) == 2 else 0,
                         unquote(username) or None, unquote(password) or None)


def _server_kwargs(url: str, ca_file: str | None) -> dict[str, Any]:
    tls = {"ssl_ca_certs": ca_file, "ssl_cert_reqs": "required"} \
        if ca_file and urlsplit(url).scheme == "rediss" else {}
    return {**TIMEOUTS, **tls}


def _group_kwargs(group: SentinelGroup,
                  sentinel_password: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the data servers' connection options, the sentinels')."""
    servers = {**TIMEOUTS, "db": group.db, "username": group.username,
               "password": group.password}
    return servers, {**TIMEOUTS, "password": sentinel_password}


def blocking_client(url: str, ca_file: str | None = None,
                    sentinel_password: str | None = None) -> redis.Redis:
    group = sentinel_group(url)
    if group is None:
        return redis.Redis.from_url(url, **_server_kwargs(url, ca_file))
    servers, sentinels = _group_kwargs(group, sentinel_password)
    return redis.sentinel.Sentinel(group.sentinels, sentinel_kwargs=sentinels,
                                   **servers).master_for(group.service)


def asyncio_client(url: str, ca_file: str | None = None,
                   sentinel_password: str | None = None) -> redis.asyncio.Redis:
    group = sentinel_group(url)
    if group is None:
        return redis.asyncio.Redis.from_url(url, **_server_kwargs(url, ca_file))
    servers, sentinels = _group_kwargs(group, sentinel_password)
    return redis.asyncio.sentinel.Sentinel(group.sentinels, sentinel_kwargs=sentinels,
                                           **servers).master_for(group.service)


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


def probe(client: redis.Redis) -> str | None:
    """Blocking: `misconfigured` of a PING, or None (answered, or away)."""
    try:
        client.ping()
    except redis.RedisError as e:
        return misconfigured(e)
    return None
