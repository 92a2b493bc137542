"""Window counts in Redis, shared by every gateway on it: a system that
spreads its mail over several instances is judged on its whole traffic.

Each event is one Lua script, atomic on the server: it adds the event's
tally to the system's windows and reads back the windows its rules need.
The windows have the shape of the in-process ones (windows.py): 12 buckets
per window, a running total, so an event costs a few hash increments and a
window slides with work once per bucket. Every key expires once its window
has passed with no traffic, so an idle system costs nothing. All of a
system's keys share the hash tag {system}, and a script is given its
system's base key: on a Redis Cluster each script runs on the one node
that holds its system. A sender's windows (an engine of senders) are
another instance's, under a prefix of their own, keyed `{system}:sender:`
in its system's slot, where they ask their system's memory of recipient
domains.

Scripts go out batched in one pipeline per turn of the event loop, so the
decision on an event arrives one round trip after it; until then the
system's next transaction is judged on what was known before. If Redis does
not answer, every event is judged on the in-process windows, which count
alongside all the time (this instance's share of the traffic), and Redis is
tried again a second later: mail never waits on the windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from mailgw.anomaly.metrics import FEW, METRICS, Counted, Metric, kept
from mailgw.anomaly.tally import HISTORY_STEP, HISTORY_STEPS, Counts, Tally, Window
from mailgw.anomaly.windows import BUCKETS, KEY_CAP, SEEN_CAP, SEEN_PERIOD
from mailgw.outage import Outage
from mailgw.state.redis_client import UNAVAILABLE, asyncio_client

log = logging.getLogger("mailgw.windows")

Judge = Callable[[Tally, Counts], None]

_COMMON = """
local base = KEYS[1]
local spec = cjson.decode(ARGV[1])
local n, ts = spec.n, spec.ts

-- a sum window, as windows.Counter: a hash of a slot per bucket, the
-- newest epoch `e` and the running total `r` of the slots. Sliding it costs
-- work once per bucket, not per event.
local function sum_window(key, width, ttl)
  local epoch = math.floor(ts / width)
  local e = tonumber(redis.call('HGET', key, 'e'))
  if e == nil or epoch > e then
    local r = 0
    if e ~= nil and epoch - e < n then
      local gone = {'r'}
      for x = e + 1, epoch do gone[#gone + 1] = x % n end
      local values = redis.call('HMGET', key, unpack(gone))
      r = tonumber(values[1]) or 0
      for i = 2, #values do r = r - (tonumber(values[i]) or 0) end
      redis.call('HDEL', key, unpack(gone, 2))
    else
      redis.call('DEL', key)
    end
    redis.call('HSET', key, 'e', epoch, 'r', r)
    redis.call('EXPIRE', key, ttl)  -- a new bucket: the window outlives it
    e = epoch
  end
  return epoch, e
end

-- a per-key window, as windows.KeyCounter: a hash per bucket, a totals
-- hash ':t', and ':m' with the newest epoch `e`, the largest total `top`
-- and each bucket's size; with `few`, the spec.few largest totals (`lead`,
-- a JSON list of pairs, read and written with the rest of ':m', no key or
-- call of their own) and their sum `few`. Buckets that leave are taken
-- out of the totals.
local function lead(leaders)
  local pairs_, sum = {}, 0
  for member, count in pairs(leaders) do
    pairs_[#pairs_ + 1], sum = {member, count}, sum + count
  end
  return cjson.encode(pairs_), sum
end
local function keyed_window(key, width, ttl, few)
  local meta = key .. ':m'
  local epoch = math.floor(ts / width)
  local e = tonumber(redis.call('HGET', meta, 'e'))
  if e == nil then
    -- nothing known (first use, or lost): no leftovers counted
    redis.call('DEL', key .. ':t')
    for x = epoch - n + 1, epoch do redis.call('DEL', key .. ':b:' .. x) end
  elseif epoch > e then
    local expired = false
    for x = e - n + 1, math.min(e, epoch - n) do
      if tonumber(redis.call('HGET', meta, 'z' .. x % n)) then
        local bucket = key .. ':b:' .. x
        local flat = redis.call('HGETALL', bucket)
        for j = 1, #flat, 2 do
          if redis.call('HINCRBY', key .. ':t', flat[j], -tonumber(flat[j + 1])) <= 0 then
            redis.call('HDEL', key .. ':t', flat[j])
          end
        end
        redis.call('DEL', bucket)
        redis.call('HDEL', meta, 'z' .. x % n)
        expired = true
      end
    end
    if expired then
      local top, ranked = 0, {}
      local flat = redis.call('HGETALL', key .. ':t')
      for j = 1, #flat, 2 do
        local v = tonumber(flat[j + 1])
        top = math.max(top, v)
        if few then ranked[#ranked + 1] = {flat[j], v} end
      end
      redis.call('HSET', meta, 'top', top)
      if few then
        table.sort(ranked, function(a, b) return a[2] > b[2] end)
        local leaders = {}
        for j = 1, math.min(spec.few, #ranked) do leaders[ranked[j][1]] = ranked[j][2] end
        local encoded, sum = lead(leaders)
        redis.call('HSET', meta, 'lead', encoded, 'few', sum)
      end
    end
  end
  if e == nil or epoch > e then
    redis.call('HSET', meta, 'e', epoch)
    redis.call('EXPIRE', meta, ttl)
    e = epoch
  end
  return epoch, e, meta
end
"""

_COUNT = _COMMON + """
local cap, values, sums = spec.cap, {}, {}
for _, s in ipairs(spec.sums) do  -- {name, width, ttl, amount}
  local key = base .. s[1]
  local epoch, e = sum_window(key, s[2], s[3])
  if epoch > e - n then  -- not too late for its bucket
    redis.call('HINCRBYFLOAT', key, epoch % n, s[4])
    sums[s[1]] = tonumber(redis.call('HINCRBYFLOAT', key, 'r', s[4]))
  end
end
-- `member` counted up to `count`: a leader if it is one of the few counted
-- most (counts only grow between expiries); whether the leaders changed
local function rise(leaders, member, count)
  if leaders[member] then leaders[member] = count return true end
  local low, size = nil, 0
  for m, c in pairs(leaders) do
    size = size + 1
    if low == nil or c < leaders[low] then low = m end
  end
  if size < spec.few then leaders[member] = count return true end
  if count > leaders[low] then
    leaders[low], leaders[member] = nil, count
    return true
  end
  return false
end
for _, k in ipairs(spec.keys) do  -- {name, width, ttl, {keys}, few}
  local key, few = base .. k[1], k[5]
  local epoch, e, meta = keyed_window(key, k[2], k[3], few)
  if epoch > e - n then
    local bucket, z = key .. ':b:' .. epoch, 'z' .. epoch % n
    local got = redis.call('HMGET', meta, z, 'top', 'lead')
    local size, top = tonumber(got[1]) or 0, tonumber(got[2]) or 0
    local was_size, was_top = size, top
    local leaders, moved = nil, false
    if few then
      leaders = {}
      if got[3] then
        for _, p in ipairs(cjson.decode(got[3])) do leaders[p[1]] = p[2] end
      end
    end
    for _, member in ipairs(k[4]) do
      -- past the cap a bucket learns no new keys
      if size < cap or redis.call('HEXISTS', bucket, member) == 1 then
        if redis.call('HINCRBY', bucket, member, 1) == 1 then size = size + 1 end
        local count = redis.call('HINCRBY', key .. ':t', member, 1)
        top = math.max(top, count)
        if few and rise(leaders, member, count) then moved = true end
      end
    end
    if was_size == 0 and size > 0 then  -- a new bucket: it and the totals outlive it
      redis.call('EXPIRE', bucket, 3 * k[3])
      redis.call('EXPIRE', key .. ':t', k[3])
    end
    if moved then
      local encoded, sum = lead(leaders)
      redis.call('HSET', meta, z, size, 'top', top, 'lead', encoded, 'few', sum)
    elseif size ~= was_size or top ~= was_top then
      redis.call('HSET', meta, z, size, 'top', top)
    end
  end
end
-- a novel metric, as windows.Seen: per period a bitmap of 65,536 bits and a
-- count of keys learned; a key is new unless all three of its probes are set
-- in this period's bitmap or the last's; an event with a new key adds 1 to its
-- windows
local function probes(member)
  local h = redis.sha1hex(member)
  return {tonumber(h:sub(1, 4), 16), tonumber(h:sub(5, 8), 16), tonumber(h:sub(9, 12), 16)}
end
local function all_set(key, ps)
  for _, p in ipairs(ps) do
    if redis.call('GETBIT', key, p) == 0 then return false end
  end
  return true
end
for _, nv in ipairs(spec.novel) do  -- {name, {keys}, {{name, width, ttl}, ...}}
  -- the memory is the system's, also for one of its senders
  local cur = spec.memory .. nv[1] .. ':' .. spec.gen
  local prev = spec.memory .. nv[1] .. ':' .. (spec.gen - 1)
  local new = 0
  for _, member in ipairs(nv[2]) do
    local ps = probes(member)
    if not all_set(cur, ps) then
      if not all_set(prev, ps) then new = 1 end
      if redis.call('INCR', cur .. ':n') <= spec.seen_cap then
        for _, p in ipairs(ps) do redis.call('SETBIT', cur, p, 1) end
        redis.call('EXPIRE', cur, spec.seen_ttl)
        redis.call('EXPIRE', cur .. ':n', spec.seen_ttl)
      end
    end
  end
  for _, s in ipairs(nv[3]) do
    local key = base .. s[1]
    local epoch, e = sum_window(key, s[2], s[3])
    if epoch > e - n then
      redis.call('HINCRBYFLOAT', key, epoch % n, new)
      sums[s[1]] = tonumber(redis.call('HINCRBYFLOAT', key, 'r', new))
    end
  end
end
local hours = {}
for i, h in ipairs(spec.hours) do  -- {metric, amount}
  local key = base .. 'h:' .. h[1] .. ':' .. math.floor(ts / 3600)
  hours[i] = tonumber(redis.call('INCRBYFLOAT', key, h[2]))
  if hours[i] == h[2] then redis.call('EXPIRE', key, 7200) end
end
if spec.traffic > 0 then  -- the 24-hour history, a field per step
  local key, step = base .. 'history', math.floor(ts / spec.step)
  if tonumber(redis.call('HINCRBYFLOAT', key, step, spec.traffic)) == spec.traffic then
    for _, old in ipairs(redis.call('HKEYS', key)) do  -- a new step: the oldest leave
      if tonumber(old) <= step - spec.steps then redis.call('HDEL', key, old) end
    end
    redis.call('EXPIRE', key, spec.step * (spec.steps + 1))
  end
end
for i, r in ipairs(spec.reads) do  -- {name, width, ttl, how}
  local key = base .. r[1]
  if r[4] == 'sum' then
    values[i] = sums[r[1]]
    if values[i] == nil then
      sum_window(key, r[2], r[3])
      values[i] = tonumber(redis.call('HGET', key, 'r'))
    end
  else
    local _, _, meta = keyed_window(key, r[2], r[3], r[5])
    if r[4] == 'distinct' then values[i] = redis.call('HLEN', key .. ':t')
    else values[i] = tonumber(redis.call('HGET', meta, r[4])) or 0 end
  end
end
return cjson.encode({values, hours})
"""

# once per lift (`once`: the lifted suspension), however many gateways see
# it; the hour counts stay: they feed the learned baselines, which a lift keeps
_RESET = _COMMON + """
local marker = base .. 'lifted'
if redis.call('GET', marker) == spec.once then return 0 end
redis.call('SET', marker, spec.once, 'EX', 86400)
for _, name in ipairs(spec.sums) do redis.call('DEL', base .. name) end
for _, name in ipairs(spec.keys) do
  local key = base .. name
  local e = tonumber(redis.call('HGET', key .. ':m', 'e'))
  if e then
    for x = e - n + 1, e do redis.call('DEL', key .. ':b:' .. x) end
  end
  redis.call('DEL', key .. ':t', key .. ':m')
end
return 1
"""


def _name(k: Counted) -> str:
    metric, seconds = k.counter
    return f"{'s' if k.how == 'sum' else 'k'}:{metric}:{seconds:g}"


def _ttl(seconds: float) -> int:
    """How long a window's keys outlive the last bucket begun: the window and
    one bucket, after which every bucket in it has left anyway."""
    return math.ceil(seconds + seconds / BUCKETS) + 2


@dataclass(frozen=True, slots=True)
class _Pending:
    tally: Tally
    fallback: Counts
    then: Judge


class RedisWindows:
    """The SharedWindows of tally.py, on Redis."""

    BATCH = 512
    RETRY = 1.0  # seconds without Redis after it failed

    def __init__(self, url: str, prefix: str, windows: Sequence[Window],
                 on_error: Callable[[str], None] = lambda operation: None,
                 metrics: Mapping[str, Metric] = METRICS, *, ca_file: str | None = None,
                 sentinel_password: str | None = None):
        """`windows`: the engine's windows (a tally names them by index);
        `on_error(operation)`: told of each failed call (metrics);
        `metrics`: the engine's, which say how each window counts;
        `url`, `ca_file`, `sentinel_password`: as state/redis_client.py takes them."""
        # redis-py types every reply as "maybe awaitable"
        self.r: Any = asyncio_client(url, ca_file, sentinel_password)
        self.prefix = prefix
        self._count = self.r.register_script(_COUNT)
        self._reset = self.r.register_script(_RESET)
        self._loaded = False  # both scripts are in Redis's script cache
        # each window as the scripts know it: key, bucket width, time to live;
        # how read (a novel metric's windows hold sums), whether its count
        # keeps the few keys counted most
        plan = kept(windows, metrics)
        self._how = [(k.how, k.few) for k in plan]
        self._window = [(_name(k), w[1] / BUCKETS, _ttl(w[1]))
                        for w, k in zip(windows, plan, strict=True)]
        named = {_name(k): k.how for k in plan}  # two windows may share one count
        self._reset_spec = {"n": BUCKETS,
                            "sums": [key for key, how in named.items() if how == "sum"],
                            "keys": [key for key, how in named.items() if how != "sum"]}
        self._queue: deque[_Pending | tuple[str, str]] = deque()  # (system, once): a reset
        self._resets: list[tuple[str, str]] = []  # not yet through
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._down_until = 0.0
        # while Redis does not answer, the rules judge on in-process counts
        self._outage = Outage(log, "window counts in Redis", lambda: on_error("count windows"))
        self._pending: dict[str, int] = {}  # system -> its tallies not judged yet
        self._settled: dict[str, asyncio.Event] = {}  # set when a system has none

    @property
    def degraded(self) -> bool:
        """Judging on in-process counts: Redis did not answer."""
        return self._outage.down

    def _base(self, name: str) -> str:
        """The keys' base of a system, or of "system sender" (senders.subject)
        in the slot of its system."""
        system, _, sender = name.partition(" ")
        return f"{self.prefix}w:{{{system}}}:{sender}:" if sender else \
            f"{self.prefix}w:{{{system}}}:"

    def submit(self, tally: Tally, fallback: Counts, then: Judge) -> None:
        if time.monotonic() < self._down_until or len(self._queue) >= 50 * self.BATCH:
            then(tally, fallback)
            return
        self._queue.append(_Pending(tally, fallback, then))
        owner = tally.memory or tally.system  # a sender's tallies are its system's
        self._pending[owner] = self._pending.get(owner, 0) + 1
        self._start()

    async def settled(self, system: str, timeout: float = 2.0) -> None:
        if system not in self._pending:
            return
        done = self._settled.setdefault(system, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)

    def _judged(self, system: str) -> None:
        left = self._pending[system] - 1
        if left:
            self._pending[system] = left
            return
        del self._pending[system]
        done = self._settled.pop(system, None)
        if done is not None:
            done.set()

    def reset(self, system: str, once: str) -> None:
        # queued in order with the counts: what came before the lift is cleared
        self._queue.append((system, once))
        self._start()

    async def top_keys(self, system: str, window: int, n: int) -> list[str] | None:
        try:
            totals = await self.r.hgetall(f"{self._base(system)}{self._window[window][0]}:t")
        except UNAVAILABLE:
            return None
        ranked = sorted(totals.items(), key=lambda kv: int(kv[1]), reverse=True)
        return [key.decode() for key, _ in ranked[:n]]

    async def counts(self, tally: Tally) -> Counts | None:
        try:
            reply = await self._count(keys=[self._base(tally.system)], args=[self._spec(tally)])
        except UNAVAILABLE:
            return None
        return self._counts(tally, reply)

    async def history(self, system: str, ts: float) -> dict[int, float] | None:
        try:
            steps = await self.r.hgetall(self._base(system) + "history")
        except UNAVAILABLE:
            return None
        first = int(ts // HISTORY_STEP) - HISTORY_STEPS
        return {s: n for s, n in ((int(k), float(v)) for k, v in steps.items()) if s > first}

    def _start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # resets left over from an outage are tried again even when idle
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       self.RETRY if self._resets else None)
            self._wake.clear()
            while self._queue or self._resets:
                batch = [*self._resets, *(self._queue.popleft()
                                          for _ in range(min(len(self._queue), self.BATCH)))]
                self._resets = []
                try:
                    answers = await self._send(batch)
                except Exception as e:  # a bug, not Redis: the batch is judged in process
                    log.exception("counting in Redis failed")
                    self._outage.failed(e, "judging on this instance's own counts")
                    answers = [None] * len(batch)
                for item, counts in zip(batch, answers, strict=True):
                    if isinstance(item, tuple):
                        continue
                    try:
                        item.then(item.tally, counts or item.fallback)
                    except Exception:
                        log.exception("judging %s's event failed", item.tally.system)
                    self._judged(item.tally.memory or item.tally.system)
                if self._resets:
                    break

    async def _send(self, batch: list[_Pending | tuple[str, str]]) -> list[Counts | None]:
        """Send `batch`; the counts for each tally in it, None where Redis
        did not answer. Resets that did not go through are kept for later."""
        if time.monotonic() >= self._down_until:
            try:
                replies = await self._pipeline(batch)
                # a Redis that restarted (or a cluster node) lacks the scripts:
                # what it was sent did not run, and goes again
                again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if again:
                    self._loaded = False
                    for i, reply in zip(again, await self._pipeline([batch[i] for i in again]),
                                        strict=True):
                        replies[i] = reply
                failed = next((r for r in replies if isinstance(r, Exception)), None)
                if failed is not None:
                    raise failed
            except UNAVAILABLE as e:
                self._down_until = time.monotonic() + self.RETRY
                self._outage.failed(e, "judging on this instance's own counts until it is back")
            else:
                self._outage.ok()
                return [None if isinstance(item, tuple) else self._counts(item.tally, reply)
                        for item, reply in zip(batch, replies, strict=True)]
        self._resets = [item for item in batch if isinstance(item, tuple)]
        return [None] * len(batch)

    async def _pipeline(self, batch: list[_Pending | tuple[str, str]]) -> list[Any]:
        # by sha, loaded once: redis-py's scripts in a pipeline would ask
        # SCRIPT EXISTS first, a second round trip for every batch
        if not self._loaded:
            for script in (self._count, self._reset):
                await self.r.script_load(script.script)  # its sha is fixed by its text
            self._loaded = True
        async with self.r.pipeline(transaction=False) as pipe:
            for item in batch:
                if isinstance(item, tuple):
                    system, once = item
                    spec = orjson.dumps({**self._reset_spec, "once": once})
                    pipe.evalsha(self._reset.sha, 1, self._base(system), spec)
                else:
                    pipe.evalsha(self._count.sha, 1, self._base(item.tally.system),
                                 self._spec(item.tally))
            return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    def _spec(self, t: Tally) -> bytes:
        window, how = self._window, self._how
        return orjson.dumps({
            "ts": t.ts, "n": BUCKETS, "cap": KEY_CAP, "few": FEW,
            "sums": [(*window[i], a) for i, a in t.sums],
            "keys": [(*window[i], keys, how[i][1]) for i, keys in t.keys],
            "novel": [(f"seen:{metric}", keys, [window[i] for i in windows])
                      for metric, keys, windows in t.novel],
            "memory": self._base(t.memory or t.system),
            "gen": int(t.ts // SEEN_PERIOD), "seen_cap": SEEN_CAP,
            "seen_ttl": 2 * SEEN_PERIOD,
            "hours": t.hours,
            "reads": [(*window[i], *how[i]) for i in t.reads],
            "traffic": t.traffic, "step": HISTORY_STEP, "steps": HISTORY_STEPS,
        })

    def _counts(self, t: Tally, reply: bytes) -> Counts:
        read, hours = orjson.loads(reply)
        values = [0.0] * len(self._window)
        # cjson encodes an empty table as an object
        for i, value in zip(t.reads, read or [], strict=True):
            values[i] = value
        return Counts(values, t.reads,
                      {m: v for (m, _), v in zip(t.hours, hours or [], strict=True)})

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await self.r.aclose()
