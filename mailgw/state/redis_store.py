"""The Redis state store: the same records and guarantees as the embedded
store, shared by several gateway instances and the CLI.

Every change is one Lua script, atomic on the server: a suspension is
created only if the system has none active, its audit entry and its pending
notice go in with it; a notice is claimed by removing it from the pending set,
which exactly one caller can do. Nothing here holds mail: Redis keeps
decisions and records, the spool keeps the messages.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import redis

from mailgw.state.records import AuditEntry, Suspension

_SUSPEND = """
local active, seq, latest, audit, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, system, record, ts, by, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('HEXISTS', active, system) == 1 then return false end
local id = redis.call('INCR', seq)
local rec = cjson.decode(record)
rec['id'] = id
local text = cjson.encode(rec)
redis.call('HSET', active, system, text)
redis.call('SET', prefix .. 'rec:' .. id, text)
redis.call('HSET', latest, system, id)
redis.call('XADD', audit, '*', 'entry', cjson.encode({ts = tonumber(ts), system = system,
  action = 'suspended', by = by, reason = reason, details = {suspension = id}}))
redis.call('SADD', pending, 'suspended:' .. id)
return text
"""

_LIFT = """
local active, audit, pending = KEYS[1], KEYS[2], KEYS[3]
local prefix, system, at, by, reason, purge = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local text = redis.call('HGET', active, system)
if not text then return false end
local rec = cjson.decode(text)
rec['lifted_at'] = tonumber(at)
rec['lifted_by'] = by
rec['lift_reason'] = reason
rec['purge'] = (purge == '1')
text = cjson.encode(rec)
redis.call('HDEL', active, system)
redis.call('SET', prefix .. 'rec:' .. rec['id'], text)
redis.call('XADD', audit, '*', 'entry', cjson.encode({ts = tonumber(at), system = system,
  action = 'lifted', by = by, reason = reason,
  details = {suspension = rec['id'], purge = (purge == '1')}}))
redis.call('SADD', pending, 'lifted:' .. rec['id'])
return text
"""


# one gateway wins each change of an address's state on a zone
_DNSBL = """
local states, audit = KEYS[1], KEYS[2]
local field, listed, entry = ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HGET', states, field)
local was = old and cjson.decode(old)['listed'] or false
local now = cjson.decode(entry)
if old and was == now['listed'] then return 0 end
redis.call('HSET', states, field, entry)
if not old and not now['listed'] then return 0 end
redis.call('XADD', audit, '*', 'entry', cjson.encode({ts = now['since'], system = cjson.null,
  action = now['listed'] and 'dnsbl_listed' or 'dnsbl_delisted', by = 'dnsbl',
  reason = now['reason'], details = {address = now['address'], zone = now['zone']}}))
return 1
"""


def _record(text: bytes | str) -> Suspension:
    data = json.loads(text)
    # cjson turns an empty evidence object into an empty array
    data["evidence"] = data.get("evidence") or {}
    return Suspension(**data)


class RedisStore:
    def __init__(self, url: str, prefix: str = "mailgw:"):
        # redis-py types every reply as "maybe awaitable"; this client is the sync one
        self.r: Any = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.p = prefix
        self._suspend = self.r.register_script(_SUSPEND)
        self._lift = self.r.register_script(_LIFT)
        self._dnsbl = self.r.register_script(_DNSBL)

    def _k(self, name: str) -> str:
        return self.p + name

    def close(self) -> None:
        self.r.close()

    def suspend(self, s: Suspension) -> Suspension | None:
        record = {k: v for k, v in asdict(s).items() if k != "id"}
        text = self._suspend(
            keys=[self._k("active"), self._k("seq"), self._k("latest"), self._k("audit"),
                  self._k("pending")],
            args=[self.p, s.system, json.dumps(record), s.since, s.by, s.reason or s.rule or ""])
        return _record(text) if text else None

    def lift(self, system: str, by: str, reason: str, at: float,
             purge: bool = False) -> Suspension | None:
        text = self._lift(keys=[self._k("active"), self._k("audit"), self._k("pending")],
                          args=[self.p, system, at, by, reason, "1" if purge else "0"])
        return _record(text) if text else None

    def claim_notice(self, suspension_id: int, kind: str) -> bool:
        return bool(self.r.srem(self._k("pending"), f"{kind}:{suspension_id}"))

    def unclaim_notice(self, suspension_id: int, kind: str) -> None:
        self.r.sadd(self._k("pending"), f"{kind}:{suspension_id}")

    def pending_notices(self) -> list[tuple[str, Suspension]]:
        out = []
        for member in sorted(self.r.smembers(self._k("pending"))):
            kind, _, sid = member.decode().partition(":")
            text = self.r.get(self._k(f"rec:{sid}"))
            if text is not None:
                out.append((kind, _record(text)))
        return sorted(out, key=lambda kr: kr[1].id or 0)

    def latest(self, system: str) -> Suspension | None:
        sid = self.r.hget(self._k("latest"), system)
        text = self.r.get(self._k(f"rec:{int(sid)}")) if sid is not None else None
        return _record(text) if text is not None else None

    def active(self) -> dict[str, Suspension]:
        return {k.decode(): _record(v) for k, v in self.r.hgetall(self._k("active")).items()}

    def dnsbl_transition(self, address: str, zone: str, listed: bool, reason: str,
                         at: float) -> bool:
        entry = json.dumps({"address": address, "zone": zone, "listed": listed,
                            "reason": reason, "since": at})
        return bool(self._dnsbl(keys=[self._k("dnsbl"), self._k("audit")],
                                args=[f"{address} {zone}", int(listed), entry]))

    def dnsbl_listings(self) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.r.hvals(self._k("dnsbl"))),
                      key=lambda e: (e["address"], e["zone"]))

    def record(self, entry: AuditEntry) -> None:
        self.r.xadd(self._k("audit"), {"entry": json.dumps(
            {"ts": entry.ts, "system": entry.system, "action": entry.action, "by": entry.by,
             "reason": entry.reason, "details": entry.details}, ensure_ascii=False)})

    def history(self, system: str | None = None) -> list[AuditEntry]:
        entries = []
        for n, (_, fields) in enumerate(self.r.xrange(self._k("audit"))):
            e = json.loads(fields[b"entry"])
            if system is None or e["system"] == system:
                details = e.get("details") or {}
                entries.append(AuditEntry(ts=e["ts"], system=e["system"], action=e["action"],
                                          by=e["by"], reason=e.get("reason") or None,
                                          details=details, id=n + 1))
        return entries

    def save_baselines(self, baselines: dict[str, Any]) -> None:
        if baselines:
            self.r.hset(self._k("baselines"),
                        mapping={k: json.dumps(v) for k, v in baselines.items()})

    def load_baselines(self) -> dict[str, Any]:
        return {k.decode(): json.loads(v)
                for k, v in self.r.hgetall(self._k("baselines")).items()}
