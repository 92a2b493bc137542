"""The Redis state store: the same records and guarantees as the embedded
store, shared by several gateway instances and the CLI.

Every change is one Lua script, atomic on the server: a suspension (or a
sender's restriction) is created only if its subject (mailgw/senders.py:
the system, or "system sender") has none active, its audit entry and its pending
notice go in with it; a notice is claimed by removing it from the pending set,
which exactly one caller can do. Nothing here holds mail: Redis keeps
decisions and records, the spool keeps the messages.

On a Redis Cluster every key of the store shares one hash tag (the prefix,
`{mailgw}:`), so each script touches one slot: the store holds decisions,
not traffic, and one slot carries it. On one server the keys keep their
plain names (`mailgw:active`).

A Redis restarted without persistence, or a failover to an empty replica,
loses what it held; the gateways write back the suspensions they know
(`confirm`), and audit entries written late (from a gateway's outbox) take
their place in the history by time.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from mailgw.senders import subject
from mailgw.state.records import RESTORED, AuditEntry, Suspension
from mailgw.state.redis_client import blocking_client, clustered

_SUSPEND = """
local active, seq, latest, audit, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, subject, record, ts, by, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local system, action, graces = ARGV[8], ARGV[9], KEYS[6]
if redis.call('HEXISTS', active, subject) == 1 then return false end
redis.call('HDEL', graces, subject)  -- restricted again: the grace is over
local id = redis.call('INCR', seq)
local rec = cjson.decode(record)
rec['id'] = id
local text = cjson.encode(rec)
redis.call('HSET', active, subject, text)
redis.call('SET', prefix .. 'rec:' .. id, text)
redis.call('HSET', latest, subject, id)
local details = cjson.decode(ARGV[7])
details['suspension'] = id
redis.call('XADD', audit, '*', 'entry', cjson.encode({ts = tonumber(ts), system = system,
  action = action, by = by, reason = reason, details = details}))
redis.call('SADD', pending, 'suspended:' .. id)
return text
"""

_LIFT = """
local active, audit, pending, graces = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, subject, at, by, reason, purge = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local system, action, grace = ARGV[7], ARGV[8], tonumber(ARGV[9])
local text = redis.call('HGET', active, subject)
if not text then return false end
local rec = cjson.decode(text)
rec['lifted_at'] = tonumber(at)
rec['lifted_by'] = by
rec['lift_reason'] = reason
rec['purge'] = (purge == '1')
if grace then rec['grace_until'] = grace end
text = cjson.encode(rec)
redis.call('HDEL', active, subject)
redis.call('SET', prefix .. 'rec:' .. rec['id'], text)
local details = {suspension = rec['id'], purge = (purge == '1')}
if subject ~= system then details['sender'] = rec['sender'] end
if grace then
  details['grace_until'] = grace
  -- the graces run out: those past are dropped as a new one comes
  local held = redis.call('HGETALL', graces)
  for i = 1, #held, 2 do
    if cjson.decode(held[i + 1])['grace_until'] <= tonumber(at) then
      redis.call('HDEL', graces, held[i])
    end
  end
  redis.call('HSET', graces, subject, text)
end
redis.call('XADD', audit, '*', 'entry', cjson.encode({ts = tonumber(at), system = system,
  action = action, by = by, reason = reason, details = details}))
redis.call('SADD', pending, 'lifted:' .. rec['id'])
return text
"""

# a suspension a gateway knows to be in force: as the store holds it (the
# same subject and since under that id; `since` as cjson keeps it, to the
# ms), or written back under its id, or a new one if another record took it
_CONFIRM = """
local active, seq, latest, audit = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, record, at, reason, subject = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local function subject_of(r)
  if r['sender'] == nil or r['sender'] == cjson.null then return r['system'] end
  return r['system'] .. ' ' .. r['sender']
end
local rec = cjson.decode(record)
local system, id = rec['system'], rec['id']
local text = redis.call('GET', prefix .. 'rec:' .. id)
if text then
  local stored = cjson.decode(text)
  if subject_of(stored) == subject and math.abs(stored['since'] - rec['since']) < 0.001 then
    return {text, 0}
  end
end
local current = redis.call('HGET', active, subject)
if current then return {current, 0} end
if text then id = redis.call('INCR', seq) end
if tonumber(redis.call('GET', seq) or '0') < id then redis.call('SET', seq, id) end
rec['id'] = id
text = cjson.encode(rec)
redis.call('HSET', active, subject, text)
redis.call('SET', prefix .. 'rec:' .. id, text)
if tonumber(redis.call('HGET', latest, subject) or '0') < id then
  redis.call('HSET', latest, subject, id)
end
redis.call('XADD', audit, '*', 'entry', cjson.encode({ts = tonumber(at), system = system,
  action = 'restored', by = 'gateway', reason = reason, details = {suspension = id}}))
return {text, 1}
"""

# an audit entry with a key is appended once: the key is kept a week, far
# longer than an outbox takes to let go of an entry the store took
_RECORD_ONCE = """
if not redis.call('SET', KEYS[2], 1, 'NX', 'EX', 604800) then return 0 end
redis.call('XADD', KEYS[1], '*', 'entry', ARGV[1])
return 1
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
    data["sender"] = data.get("sender") or None  # a record from before restrictions: none
    return Suspension(**data)


class RedisStore:
    def __init__(self, url: str, prefix: str = "mailgw:", *, ca_file: str | None = None,
                 sentinel_password: str | None = None):
        # redis-py types every reply as "maybe awaitable"; this client is the sync one
        self.r: Any = blocking_client(url, ca_file, sentinel_password)
        self.p = f"{{{prefix.rstrip(':') or prefix}}}:" if clustered(url) else prefix
        self._suspend = self.r.register_script(_SUSPEND)
        self._lift = self.r.register_script(_LIFT)
        self._dnsbl = self.r.register_script(_DNSBL)
        self._confirm = self.r.register_script(_CONFIRM)
        self._record_once = self.r.register_script(_RECORD_ONCE)

    def _k(self, name: str) -> str:
        return self.p + name

    def close(self) -> None:
        self.r.close()

    def suspend(self, s: Suspension) -> Suspension | None:
        record = {k: v for k, v in asdict(s).items() if k != "id"}
        text = self._suspend(
            keys=[self._k("active"), self._k("seq"), self._k("latest"), self._k("audit"),
                  self._k("pending"), self._k("graces")],
            args=[self.p, s.subject, json.dumps(record), s.since, s.by,
                  s.reason or s.rule or "", json.dumps(s.finding()), s.system, s.actions[0]])
        return _record(text) if text else None

    def lift(self, system: str, by: str, reason: str, at: float,
             purge: bool = False, sender: str | None = None,
             grace_until: float | None = None) -> Suspension | None:
        action = "lifted" if sender is None else "unrestricted"
        text = self._lift(keys=[self._k("active"), self._k("audit"), self._k("pending"),
                                self._k("graces")],
                          args=[self.p, subject(system, sender), at, by, reason,
                                "1" if purge else "0", system, action,
                                "" if grace_until is None else repr(grace_until)])
        return _record(text) if text else None

    def spared(self, now: float) -> dict[str, Suspension]:
        records = (_record(v) for v in self.r.hvals(self._k("graces")))
        return {r.subject: r for r in records if r.grace_until is not None
                and r.grace_until > now}

    def confirm(self, s: Suspension, at: float) -> tuple[Suspension, bool]:
        """See `Store.confirm`. The pending notices are not written back: the
        owner was told when the suspension was decided."""
        text, restored = self._confirm(
            keys=[self._k("active"), self._k("seq"), self._k("latest"), self._k("audit")],
            args=[self.p, json.dumps(asdict(s)), at, RESTORED, s.subject])
        return _record(text), bool(restored)

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

    def latest(self, system: str, sender: str | None = None) -> Suspension | None:
        sid = self.r.hget(self._k("latest"), subject(system, sender))
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

    def record(self, entry: AuditEntry, key: str | None = None) -> None:
        """Append `entry`; one with a `key` already taken is not appended again."""
        text = json.dumps({"ts": entry.ts, "system": entry.system, "action": entry.action,
                           "by": entry.by, "reason": entry.reason, "details": entry.details},
                          ensure_ascii=False)
        if key is None:
            self.r.xadd(self._k("audit"), {"entry": text})
        else:
            self._record_once(keys=[self._k("audit"), self._k(f"audit_key:{key}")], args=[text])

    def history(self, system: str | None = None) -> list[AuditEntry]:
        """In time order: an entry written late (from an outbox) is in the
        stream after entries younger than it."""
        entries = [json.loads(fields[b"entry"]) for _, fields in self.r.xrange(self._k("audit"))]
        entries.sort(key=lambda e: e["ts"])  # stable: stream order among equal times
        return [AuditEntry(ts=e["ts"], system=e["system"], action=e["action"], by=e["by"],
                           reason=e.get("reason") or None, details=e.get("details") or {},
                           id=n + 1)
                for n, e in enumerate(entries) if system is None or e["system"] == system]

    def save_baselines(self, baselines: dict[str, Any]) -> None:
        if baselines:
            self.r.hset(self._k("baselines"),
                        mapping={k: json.dumps(v) for k, v in baselines.items()})

    def load_baselines(self) -> dict[str, Any]:
        return {k.decode(): json.loads(v)
                for k, v in self.r.hgetall(self._k("baselines")).items()}
