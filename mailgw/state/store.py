"""What a state store does, and the one place that picks one from config."""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol
from urllib.parse import urlsplit

from mailgw.config import Config
from mailgw.state import redis_client
from mailgw.state.records import AuditEntry, Suspension

# what a store that cannot be reached raises, whichever the backend
UNAVAILABLE: tuple[type[Exception], ...] = (*redis_client.UNAVAILABLE, sqlite3.Error)


class Store(Protocol):
    def suspend(self, s: Suspension) -> Suspension | None: ...
    def lift(self, system: str, by: str, reason: str, at: float,
             purge: bool = False, sender: str | None = None,
             grace_until: float | None = None) -> Suspension | None:
        """End the active suspension (with `sender`: that sender's
        restriction); None when there was none. `purge`: the held mail is to
        be deleted rather than released; `grace_until` (a sender's only):
        that sender is spared until then (`spared`)."""
        ...

    def spared(self, now: float) -> dict[str, Suspension]:
        """By subject, the senders' restrictions lifted with a grace that
        runs past `now` and not restricted again since."""
        ...

    def confirm(self, s: Suspension, at: float) -> tuple[Suspension, bool]:
        """`s`, a suspension a gateway knows to be in force, as the store
        holds it now: that record, lifted or not, or its subject's other
        active record. If the store lost it (Redis restarted empty, a
        failover to an empty replica), it is written back, under its id
        unless another record took that id meanwhile, with a `restored`
        audit entry at `at`, its owner notice counted as sent, and later ids
        going on after it; True then. Never "lifted" for a record the store
        does not hold."""
        ...

    def claim_notice(self, suspension_id: int, kind: str) -> bool: ...
    def unclaim_notice(self, suspension_id: int, kind: str) -> None: ...
    def pending_notices(self) -> list[tuple[str, Suspension]]: ...
    def latest(self, system: str, sender: str | None = None) -> Suspension | None: ...

    def active(self) -> dict[str, Suspension]:
        """Every record in force, by subject (mailgw/senders.py: a system's
        id, or "system sender" for a sender's restriction)."""
        ...

    def history(self, system: str | None = None) -> list[AuditEntry]:
        """The audit trail in time order (`ts`)."""
        ...

    def record(self, entry: AuditEntry, key: str | None = None) -> None:
        """Append `entry`; with a `key`, only if no entry with that key was
        (an outbox that wrote it and crashed before letting go of it)."""
        ...

    def dnsbl_transition(self, address: str, zone: str, listed: bool, reason: str,
                         at: float) -> bool: ...
    def dnsbl_listings(self) -> list[dict[str, Any]]: ...
    def save_baselines(self, baselines: dict[str, Any]) -> None: ...
    def load_baselines(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def open_store(config: Config) -> Store:
    if config.state.backend == "redis":
        from mailgw.state.redis_store import RedisStore

        state = config.state
        return RedisStore(state.redis_url, state.redis_prefix,
                          ca_file=str(state.tls_ca_file) if state.tls_ca_file else None,
                          sentinel_password=state.sentinel_password)
    from mailgw.state.embedded import EmbeddedStore

    return EmbeddedStore(config.gateway.state_file)



def describe(config: Config) -> str:
    """The store as the log and the CLI name it, a Redis password masked."""
    if config.state.backend == "redis":
        return f"Redis {masked(config.state.redis_url)}"
    return f"SQLite {config.gateway.state_file}"


def masked(url: str) -> str:
    """`url` with its password, if any, as ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hostport}").geturl()
