"""Window counts in Redis, shared by every gateway on it: a system that
spreads its mail over several instances is judged on its whole traffic.

A tally is counted by a Lua script, atomic on the server: it adds the
tally to the system's windows and reads back the windows its rules need.
The engines' windows are written into the script's text, so a call carries
only what changes (window ids, amounts, keys), and one call counts the
tallies queued together for one system: an event's for its sender and for
its system, and the system's next events.
The windows have the shape of the in-process ones (windows.py): 12 buckets
per window, a running total, so an event costs a few hash increments and a
window slides with work once per bucket. Every key expires once its window
has passed with no traffic, so an idle system costs nothing. All of a
system's keys share the hash tag {system}, and a script is given the base
keys of its system (and of its senders): on a Redis Cluster each script
runs on the one node that holds its system. A sender's windows (an engine of senders) are
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

# the helpers both scripts use; `ts` is the tally's, set before each
_COMMON = """
local ts

-- a sum window, as windows.Counter: a hash of a slot per bucket, the
-- newest epoch `e` and the running total `r` of the slots. Sliding it costs
-- work once per bucket, not per event. Returns the epoch of `ts`, the
-- window's newest, its total and the count in `ts`'s bucket.
local function sum_window(key, width, ttl)
  local epoch = math.floor(ts / width)
  local got = redis.call('HMGET', key, 'e', 'r', epoch % n)
  local e, r, slot = tonumber(got[1]), tonumber(got[2]) or 0, tonumber(got[3]) or 0
  if e == nil or epoch > e then
    if e ~= nil and epoch - e < n then
      local gone = {}
      for x = e + 1, epoch do gone[#gone + 1] = x % n end
      for _, v in ipairs(redis.call('HMGET', key, unpack(gone))) do r = r - (tonumber(v) or 0) end
      redis.call('HDEL', key, unpack(gone))
    else
      r = 0
      redis.call('DEL', key)
    end
    redis.call('HSET', key, 'e', epoch, 'r', r)
    redis.call('EXPIRE', key, ttl)  -- a new bucket: the window outlives it
    e, slot = epoch, 0  -- its bucket is among those gone
  end
  return epoch, e, r, slot
end

-- a per-key window, as windows.KeyCounter: a hash per bucket, a totals
-- hash ':t', and ':m' with the newest epoch `e`, the largest total `top`
-- and each bucket's size; with `few`, the FEW largest totals (`lead`,
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
-- `fields`: more fields of ':m' to read, returned as of after the slide
local function keyed_window(key, width, ttl, few, fields)
  local meta = key .. ':m'
  local epoch = math.floor(ts / width)
  local got = redis.call('HMGET', meta, 'e', unpack(fields))
  local e = tonumber(got[1])
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
        for j = 1, math.min(FEW, #ranked) do leaders[ranked[j][1]] = ranked[j][2] end
        local encoded, sum = lead(leaders)
        redis.call('HSET', meta, 'lead', encoded, 'few', sum)
      end
    end
  end
  if e == nil or epoch > e then
    redis.call('HSET', meta, 'e', epoch)
    redis.call('EXPIRE', meta, ttl)
    e = epoch
    if #fields > 0 then got = {epoch, unpack(redis.call('HMGET', meta, unpack(fields)))} end
  end
  return epoch, e, meta, got
end
"""

_COUNT = """
-- `member` counted up to `count`: a leader if it is one of the few counted
-- most (counts only grow between expiries); whether the leaders changed
local function rise(leaders, member, count)
  if leaders[member] then leaders[member] = count return true end
  local low, size = nil, 0
  for m, c in pairs(leaders) do
    size = size + 1
    if low == nil or c < leaders[low] then low = m end
  end
  if size < FEW then leaders[member] = count return true end
  if count > leaders[low] then
    leaders[low], leaders[member] = nil, count
    return true
  end
  return false
end
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
-- `members` counted in keyed window `w`; what they leave in its ':m' (top,
-- few) kept in `tops` for the reads
local function count_keys(base, w, members, tops)  -- w: {name, width, ttl, how, few}
  local key, few = base .. w[1], w[5]
  local z = 'z' .. math.floor(ts / w[2]) % n
  local epoch, e, meta, got = keyed_window(key, w[2], w[3], few, {z, 'top', 'lead', 'few'})
  local size, top = tonumber(got[2]) or 0, tonumber(got[3]) or 0
  local sum = tonumber(got[5]) or 0
  if epoch > e - n then
    local bucket = key .. ':b:' .. epoch
    local was_size, was_top = size, top
    local leaders, moved = nil, false
    if few then
      leaders = {}
      if got[4] then
        for _, p in ipairs(cjson.decode(got[4])) do leaders[p[1]] = p[2] end
      end
    end
    for _, member in ipairs(members) do
      -- past the cap a bucket learns no new keys
      if size < CAP or redis.call('HEXISTS', bucket, member) == 1 then
        if redis.call('HINCRBY', bucket, member, 1) == 1 then size = size + 1 end
        local count = redis.call('HINCRBY', key .. ':t', member, 1)
        top = math.max(top, count)
        if few and rise(leaders, member, count) then moved = true end
      end
    end
    if was_size == 0 and size > 0 then  -- a new bucket: it and the totals outlive it
      redis.call('EXPIRE', bucket, 3 * w[3])
      redis.call('EXPIRE', key .. ':t', w[3])
    end
    if moved then
      local encoded
      encoded, sum = lead(leaders)
      redis.call('HSET', meta, z, size, 'top', top, 'lead', encoded, 'few', sum)
    elseif size ~= was_size or top ~= was_top then
      redis.call('HSET', meta, z, size, 'top', top)
    end
  end
  tops[w[1]] = {top = top, few = sum}
end
-- one tally: its sums and keys added to the windows of layout `W` under
-- `base`, and the windows its rules read read back
local function count(base, W, spec)
  ts = spec.ts
  local values, sums, tops = {}, {}, {}
  local function add(w, amount)
    local key = base .. w[1]
    local epoch, e, r, slot = sum_window(key, w[2], w[3])
    sums[w[1]] = r
    -- not too late for its bucket; counts are whole, exact as written
    if epoch > e - n and amount ~= 0 then
      redis.call('HSET', key, epoch % n, slot + amount, 'r', r + amount)
      sums[w[1]] = r + amount
    end
  end
  for _, s in ipairs(spec.sums) do add(W[s[1] + 1], s[2]) end  -- {window, amount}
  for _, k in ipairs(spec.keys) do  -- {window, {keys}}
    -- no keys: nothing to count (a read slides the window)
    if #k[2] > 0 then count_keys(base, W[k[1] + 1], k[2], tops) end
  end
  -- a novel metric, as windows.Seen: per period a bitmap of 65,536 bits and
  -- a count of keys learned; a key is new unless all three of its probes are
  -- set in this period's bitmap or the last's; an event with a new key adds 1
  -- to its windows
  for _, nv in ipairs(spec.novel) do  -- {name, {keys}, {window, ...}}
    -- the memory is the system's, also for one of its senders
    local cur = spec.memory .. 'seen:' .. nv[1] .. ':' .. spec.gen
    local prev = spec.memory .. 'seen:' .. nv[1] .. ':' .. (spec.gen - 1)
    local new = 0
    for _, member in ipairs(nv[2]) do
      local ps = probes(member)
      if not all_set(cur, ps) then
        if not all_set(prev, ps) then new = 1 end
        if redis.call('INCR', cur .. ':n') <= SEEN_CAP then
          for _, p in ipairs(ps) do redis.call('SETBIT', cur, p, 1) end
          redis.call('EXPIRE', cur, SEEN_TTL)
          redis.call('EXPIRE', cur .. ':n', SEEN_TTL)
        end
      end
    end
    for _, i in ipairs(nv[3]) do add(W[i + 1], new) end
  end
  local hours = {}
  for i, h in ipairs(spec.hours) do  -- {metric, amount}
    local key = base .. 'h:' .. h[1] .. ':' .. math.floor(ts / 3600)
    hours[i] = tonumber(redis.call('INCRBYFLOAT', key, h[2]))
    if hours[i] == h[2] then redis.call('EXPIRE', key, 7200) end
  end
  if spec.traffic > 0 then  -- the 24-hour history, a field per step
    local key, step = base .. 'history', math.floor(ts / STEP)
    if tonumber(redis.call('HINCRBYFLOAT', key, step, spec.traffic)) == spec.traffic then
      for _, old in ipairs(redis.call('HKEYS', key)) do  -- a new step: the oldest leave
        if tonumber(old) <= step - STEPS then redis.call('HDEL', key, old) end
      end
      redis.call('EXPIRE', key, STEP * (STEPS + 1))
    end
  end
  for i, r in ipairs(spec.reads) do
    local w = W[r + 1]
    local key, how = base .. w[1], w[4]
    if how == 'sum' then
      values[i] = sums[w[1]]
      if values[i] == nil then
        local _, _, total = sum_window(key, w[2], w[3])
        values[i] = total
      end
    elseif how == 'distinct' then
      keyed_window(key, w[2], w[3], w[5], {})
      values[i] = redis.call('HLEN', key .. ':t')
    elseif tops[w[1]] then
      values[i] = tops[w[1]][how]
    else
      local _, _, _, got = keyed_window(key, w[2], w[3], w[5], {how})
      values[i] = tonumber(got[2]) or 0
    end
  end
  return {values, hours}
end
-- a tally per key given (a system's, or a sender's in its slot), each in
-- its layout: {values, hours} for each
local counted = {}
for i, base in ipairs(KEYS) do
  local spec = cjson.decode(ARGV[i])
  counted[i] = count(base, LAYOUTS[spec.layout + 1], spec)
end
return cjson.encode(counted)
"""

# once per lift (`once`: the lifted suspension), however many gateways see
# it; the hour counts stay: they feed the learned baselines, which a lift keeps
_RESET = """
local base, marker = KEYS[1], KEYS[1] .. 'lifted'
if redis.call('GET', marker) == ARGV[2] then return 0 end
redis.call('SET', marker, ARGV[2], 'EX', 86400)
for _, w in ipairs(LAYOUTS[tonumber(ARGV[1]) + 1]) do
  local key = base .. w[1]
  if w[4] == 'sum' then
    redis.call('DEL', key)
  else
    local e = tonumber(redis.call('HGET', key .. ':m', 'e'))
    if e then
      for x = e - n + 1, e do redis.call('DEL', key .. ':b:' .. x) end
    end
    redis.call('DEL', key .. ':t', key .. ':m')
  end
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


def _scripts(layouts: Sequence[Sequence[tuple[str, float, int, str, bool]]]) -> tuple[str, str]:
    """The count and reset scripts' text, with the windows of every engine
    (`layouts`, by index) and the constants in it: a tally names its windows
    by index, and the scripts' arguments are only what changes."""
    tables = ",\n".join("{" + ", ".join(
        f"{{{orjson.dumps(name).decode()}, {width!r}, {ttl}, '{how}', {str(few).lower()}}}"
        for name, width, ttl, how, few in layout) + "}" for layout in layouts)
    head = (f"local n, CAP, FEW, SEEN_CAP, SEEN_TTL, STEP, STEPS = {BUCKETS}, {KEY_CAP}, {FEW}, "
            f"{SEEN_CAP}, {2 * SEEN_PERIOD}, {HISTORY_STEP}, {HISTORY_STEPS}\n"
            f"-- each engine's windows: {{name, bucket width, time to live, how read, few}}\n"
            f"local LAYOUTS = {{\n{tables}\n}}\n")
    return head + _COMMON + _COUNT, head + _COMMON + _RESET


@dataclass(frozen=True, slots=True)
class _Pending:
    windows: RedisWindows
    tally: Tally
    fallback: Counts
    then: Judge


@dataclass(frozen=True, slots=True)
class _Reset:
    windows: RedisWindows
    system: str
    once: str


class _Counting:
    """What the RedisWindows of one gateway share: a connection, the queue of
    tallies and resets, and the scripts. A tally goes to Redis with those
    queued right after it for the same system (a sender's tally and its
    system's, of one event) as one script call: half the calls, the same
    order."""

    BATCH = 512
    TOGETHER = 16  # tallies in one script call at most

    def __init__(self, url: str, on_error: Callable[[str], None], ca_file: str | None,
                 sentinel_password: str | None, retry: float):
        self.retry = retry  # seconds without Redis after it failed
        # redis-py types every reply as "maybe awaitable"
        self.r: Any = asyncio_client(url, ca_file, sentinel_password)
        self.layouts: list[list[tuple[str, float, int, str, bool]]] = []
        self._count: Any = None  # the scripts, made once every layout is known
        self._reset: Any = None
        self._loaded = False  # both scripts are in Redis's script cache
        self._queue: deque[_Pending | _Reset] = deque()
        self._resets: list[_Reset] = []  # not yet through
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.down_until = 0.0
        # while Redis does not answer, the rules judge on in-process counts
        self.outage = Outage(log, "window counts in Redis", lambda: on_error("count windows"))
        self._pending: dict[str, int] = {}  # system -> its tallies not judged yet
        self._settled: dict[str, asyncio.Event] = {}  # set when a system has none
        self._closed = False

    def layout(self, windows: list[tuple[str, float, int, str, bool]]) -> int:
        self.layouts.append(windows)
        self._count = self._reset = None
        self._loaded = False
        return len(self.layouts) - 1

    def submit(self, item: _Pending) -> bool:
        """Queue a tally; False if Redis is known to be away, or too far behind."""
        if time.monotonic() < self.down_until or len(self._queue) >= 50 * self.BATCH:
            return False
        self._queue.append(item)
        owner = item.tally.memory or item.tally.system  # a sender's tallies are its system's
        self._pending[owner] = self._pending.get(owner, 0) + 1
        self._start()
        return True

    def reset(self, item: _Reset) -> None:
        # queued in order with the counts: what came before the lift is cleared
        self._queue.append(item)
        self._start()

    async def settled(self, system: str, timeout: float) -> None:
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

    def _start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # resets left over from an outage are tried again even when idle
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       self.retry if self._resets else None)
            self._wake.clear()
            while self._queue or self._resets:
                batch: list[_Pending | _Reset] = [
                    *self._resets, *(self._queue.popleft()
                                     for _ in range(min(len(self._queue), self.BATCH)))]
                self._resets = []
                try:
                    answers = await self._send(batch)
                except Exception as e:  # a bug, not Redis: the batch is judged in process
                    log.exception("counting in Redis failed")
                    self.outage.failed(e, "judging on this instance's own counts")
                    answers = [None] * len(batch)
                for item, counts in zip(batch, answers, strict=True):
                    if isinstance(item, _Reset):
                        continue
                    try:
                        item.then(item.tally, counts or item.fallback)
                    except Exception:
                        log.exception("judging %s's event failed", item.tally.system)
                    self._judged(item.tally.memory or item.tally.system)
                if self._resets:
                    break

    async def _send(self, batch: list[_Pending | _Reset]) -> list[Counts | None]:
        """Send `batch`; the counts for each tally in it, None where Redis
        did not answer. Resets that did not go through are kept for later."""
        if time.monotonic() >= self.down_until:
            calls = self._calls(batch)
            try:
                replies = await self._pipeline(calls)
                # a Redis that restarted (or a cluster node) lacks the scripts:
                # what it was sent did not run, and goes again
                again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                if again:
                    self._loaded = False
                    for i, reply in zip(again, await self._pipeline([calls[i] for i in again]),
                                        strict=True):
                        replies[i] = reply
                failed = next((r for r in replies if isinstance(r, Exception)), None)
                if failed is not None:
                    raise failed
            except UNAVAILABLE as e:
                self.down_until = time.monotonic() + self.retry
                self.outage.failed(e, "judging on this instance's own counts until it is back")
            else:
                self.outage.ok()
                answers: list[Counts | None] = []
                for call, reply in zip(calls, replies, strict=True):
                    if isinstance(call, _Reset):
                        answers.append(None)
                        continue
                    for item, part in zip(call, orjson.loads(reply), strict=True):
                        answers.append(item.windows.counts_of(item.tally, part))
                return answers
        self._resets = [item for item in batch if isinstance(item, _Reset)]
        return [None] * len(batch)

    def _calls(self, batch: list[_Pending | _Reset]) -> list[list[_Pending] | _Reset]:
        """The batch as script calls: a reset alone, tallies together while
        they are one system's (one hash slot), in order."""
        calls: list[list[_Pending] | _Reset] = []
        owner = None
        for item in batch:
            if isinstance(item, _Reset):
                calls.append(item)
                owner = None
                continue
            mine = item.tally.memory or item.tally.system
            last = calls[-1] if calls else None
            if mine == owner and isinstance(last, list) and len(last) < self.TOGETHER:
                last.append(item)
            else:
                calls.append([item])
                owner = mine
        return calls

    async def _pipeline(self, calls: list[list[_Pending] | _Reset]) -> list[Any]:
        # by sha, loaded once: redis-py's scripts in a pipeline would ask
        # SCRIPT EXISTS first, a second round trip for every batch
        if self._count is None:
            count, reset = _scripts(self.layouts)
            self._count, self._reset = self.r.register_script(count), \
                self.r.register_script(reset)
        if not self._loaded:
            for script in (self._count, self._reset):
                await self.r.script_load(script.script)  # its sha is fixed by its text
            self._loaded = True
        async with self.r.pipeline(transaction=False) as pipe:
            for call in calls:
                if isinstance(call, _Reset):
                    pipe.evalsha(self._reset.sha, 1, call.windows.base(call.system),
                                 call.windows.layout, call.once)
                else:
                    pipe.evalsha(self._count.sha, len(call),
                                 *(item.windows.base(item.tally.system) for item in call),
                                 *(item.windows.spec(item.tally) for item in call))
            return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await self.r.aclose()


class RedisWindows:
    """The SharedWindows of tally.py, on Redis."""

    def __init__(self, url: str, prefix: str, windows: Sequence[Window],
                 on_error: Callable[[str], None] = lambda operation: None,
                 metrics: Mapping[str, Metric] = METRICS, *, ca_file: str | None = None,
                 sentinel_password: str | None = None, retry: float = 1.0,
                 along: RedisWindows | None = None):
        """`windows`: the engine's windows (a tally names them by index);
        `on_error(operation)`: told of each failed call (metrics);
        `metrics`: the engine's, which say how each window counts;
        `url`, `ca_file`, `sentinel_password`: as state/redis_client.py takes them;
        `retry`: seconds without trying Redis after it failed;
        `along`: another engine's RedisWindows whose connection and script
        calls these share (the senders' along the systems'), the rest ignored."""
        self._counting: _Counting = along._counting if along is not None else \
            _Counting(url, on_error, ca_file, sentinel_password, retry)
        self.prefix = prefix
        # each window as the scripts know it: key, bucket width, time to live,
        # how read (a novel metric's windows hold sums), whether its count
        # keeps the few keys counted most
        self._window = [(_name(k), w[1] / BUCKETS, _ttl(w[1]), k.how, k.few)
                        for w, k in zip(windows, kept(windows, metrics), strict=True)]
        self.layout = self._counting.layout(self._window)

    @property
    def degraded(self) -> bool:
        """Judging on in-process counts: Redis did not answer."""
        return self._counting.outage.down

    def base(self, name: str) -> str:
        """The keys' base of a system, or of "system sender" (senders.subject)
        in the slot of its system."""
        system, _, sender = name.partition(" ")
        return f"{self.prefix}w:{{{system}}}:{sender}:" if sender else \
            f"{self.prefix}w:{{{system}}}:"

    def submit(self, tally: Tally, fallback: Counts, then: Judge) -> None:
        if not self._counting.submit(_Pending(self, tally, fallback, then)):
            then(tally, fallback)

    async def settled(self, system: str, timeout: float = 2.0) -> None:
        await self._counting.settled(system, timeout)

    def reset(self, system: str, once: str) -> None:
        self._counting.reset(_Reset(self, system, once))

    async def top_keys(self, system: str, window: int, n: int) -> list[str] | None:
        try:
            totals = await self._counting.r.hgetall(
                f"{self.base(system)}{self._window[window][0]}:t")
        except UNAVAILABLE:
            return None
        ranked = sorted(totals.items(), key=lambda kv: int(kv[1]), reverse=True)
        return [key.decode() for key, _ in ranked[:n]]

    async def counts(self, tally: Tally) -> Counts | None:
        done: asyncio.Future[Counts | None] = asyncio.get_running_loop().create_future()

        def answered(_: Tally, counts: Counts) -> None:
            if not done.done():  # the reader may have gone (a status request cancelled)
                done.set_result(None if counts is _NONE else counts)  # _NONE: Redis did not answer

        if not self._counting.submit(_Pending(self, tally, _NONE, answered)):
            return None
        return await done

    async def history(self, system: str, ts: float) -> dict[int, float] | None:
        try:
            steps = await self._counting.r.hgetall(self.base(system) + "history")
        except UNAVAILABLE:
            return None
        first = int(ts // HISTORY_STEP) - HISTORY_STEPS
        return {s: n for s, n in ((int(k), float(v)) for k, v in steps.items()) if s > first}

    def spec(self, t: Tally) -> bytes:
        """A tally as the count script takes it: windows by index."""
        return orjson.dumps({
            "layout": self.layout, "ts": t.ts, "sums": t.sums, "keys": t.keys,
            "novel": t.novel, "memory": self.base(t.memory or t.system),
            "gen": int(t.ts // SEEN_PERIOD), "hours": t.hours, "reads": t.reads,
            "traffic": t.traffic,
        })

    def counts_of(self, t: Tally, reply: list[Any]) -> Counts:
        read, hours = reply
        values = [0.0] * len(self._window)
        # cjson encodes an empty table as an object
        for i, value in zip(t.reads, read or [], strict=True):
            values[i] = value
        return Counts(values, t.reads,
                      {m: v for (m, _), v in zip(t.hours, hours or [], strict=True)})

    async def close(self) -> None:
        await self._counting.close()


# a tally's fallback when no count in process stands behind it (`counts`)
_NONE = Counts([], (), {})
