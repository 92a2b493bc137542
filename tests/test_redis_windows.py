"""Window counts in a real Redis read the same as the in-process windows,
event by event; the key cap holds; a lift clears a system's windows once
however many gateways see it; no key lives forever; and with Redis gone the
counts come from the process, then from Redis again once it is back."""

from __future__ import annotations

import asyncio
import random
import re

import redis

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.judge import engines
from mailgw.anomaly.rules import Rule
from mailgw.anomaly.windows import KEY_CAP, SEEN_PERIOD
from mailgw.config import DEFAULT_RULES, Anomaly, System
from mailgw.state.redis_windows import RedisWindows
from tests.support.process import free_port
from tests.support.redis_server import RedisServer
from tests.support.shared_windows import count, fresh_prefix

T0 = 1_732_406_400.0
RULES = [Rule.from_config(r) for r in DEFAULT_RULES if r.scope == "system"] + [
    Rule("domains_1m", "ceiling", "recipient_domains", 60, 1e9),
    Rule("deferred_domains", "ratio", "deferrals", 600, 1e9, per="recipient_domains"),
    # never-seen domains, over a window and a week, across the filters' periods
    Rule("new_domains", "ratio", "to_new_domains", 600, 1e9, per="messages",
         baseline=604_800),
]


def stream(rng: random.Random, n: int):
    """Several systems; bursts, pauses longer than any window, late events
    (a second gateway's clock a little behind), repeated recipients."""
    ts = T0
    for _ in range(n):
        ts += rng.choice([0.0, 0.3, 2.0, 7.0, 40.0, 700.0, 4000.0, 90_000.0])
        system = rng.choice(["mfa", "mof", "edu"])
        late = ts - rng.choice([0.0, 0.0, 0.0, 1.5])
        kind = rng.choice(["accepted", "accepted", "delivered", "bounced", "deferred",
                           "rejected"])
        event = {"ts": late, "system": system, "event": kind}
        if kind == "accepted":
            event["recipients"] = [f"u{rng.randrange(5)}@d{rng.randrange(40)}.kz"
                                   for _ in range(rng.randrange(1, 4))]
            event["size"] = rng.randrange(100, 10_000)
        yield event


def test_redis_counts_and_history_equal_the_in_process_ones(redis_server):
    engine = Engine(RULES)

    async def go():
        windows = RedisWindows(redis_server.url, fresh_prefix(), engine.windows)
        compared = histories = 0
        for event in stream(random.Random(5), 3000):
            tally = engine.tally(event)
            if tally is None:
                continue
            local = engine.local.count(tally)
            shared = await count(windows, tally)
            assert shared == local, (event, shared, local)
            compared += 1
            if compared % 20 == 0:  # the status page's 24-hour history
                history = engine.local.history(tally.system, tally.ts)
                assert await windows.history(tally.system, tally.ts) == history
                histories += bool(history)
        assert not windows.degraded and histories > 50
        await windows.close()
        return compared

    assert asyncio.run(go()) > 2500


def test_an_events_sender_and_system_tallies_go_in_one_script_call_and_read_as_in_process(
        redis_server):
    mfa = System(id="mfa", name="MFA", owners=["postmaster@mfa.kz"], networks=["10.0.0.0/8"],
                 sender_domains=["mfa.kz"])
    systems, senders = engines(Anomaly(), [mfa])
    assert senders is not None  # the default rules judge senders too
    prefix = fresh_prefix()
    client = redis.Redis.from_url(redis_server.url)

    async def go():
        windows = RedisWindows(redis_server.url, prefix, systems.windows,
                               metrics=systems.metrics)
        of_senders = RedisWindows(redis_server.url, f"{prefix}u:", senders.windows,
                                  metrics=senders.metrics, along=windows)
        rng, both = random.Random(3), 0
        client.config_resetstat()
        for event in stream(rng, 400):
            event = {**event, "system": "mfa", "sender": f"u{rng.randrange(4)}@mfa.kz"}
            known: dict = {}  # as the judge makes an event's tallies: what both make of it
            tallies = [(w, e, t) for w, e in ((of_senders, senders), (windows, systems))
                       if (t := e.tally(event, known)) is not None]
            local = [e.local.count(t) for _, e, t in tallies]
            shared = await asyncio.gather(*(count(w, t) for w, _, t in tallies))
            assert list(shared) == local, event
            both += len(tallies) == 2
        calls = client.info("commandstats")["cmdstat_evalsha"]["calls"]
        await windows.close()
        await of_senders.close()
        return both, calls

    both, calls = asyncio.run(go())
    client.close()
    assert both > 150 and calls <= 400  # one call an event, however many of its tallies


def test_the_status_pages_reading_is_the_shared_counts_and_none_without_redis(redis_server):
    engine = Engine(RULES)

    async def go():
        windows = RedisWindows(redis_server.url, fresh_prefix(), engine.windows)
        ts = T0
        for event in stream(random.Random(7), 300):
            if (tally := engine.tally({**event, "system": "mfa"})) is not None:
                engine.local.count(tally)
                await count(windows, tally)
                ts = tally.ts
        reading = engine.reading("mfa", ts + 1)
        shared = await windows.counts(reading)
        await windows.close()
        away = RedisWindows(f"redis://127.0.0.1:{free_port()}/0", fresh_prefix(),
                            engine.windows)
        unanswered = await away.counts(reading)
        await away.close()
        return shared, engine.local.count(reading), unanswered

    shared, local, unanswered = asyncio.run(go())
    assert shared == local and any(v > 0 for v in engine.named(shared).values())
    assert unanswered is None


def test_a_bucket_stops_learning_new_keys_at_the_cap(redis_server):
    engine = Engine([Rule("domains", "ceiling", "recipient_domains", 600, 1e9)])
    flood = {"ts": T0, "system": "mfa", "event": "accepted", "size": 1,
             "recipients": [f"x@d{i}.example" for i in range(KEY_CAP + 500)]}
    again = {**flood, "ts": T0 + 1, "recipients": ["x@d0.example", "x@new.example"]}

    async def go():
        windows = RedisWindows(redis_server.url, fresh_prefix(), engine.windows)
        first = await count(windows, engine.tally(flood))
        second = await count(windows, engine.tally(again))
        await windows.close()
        return first, second

    first, second = asyncio.run(go())
    assert engine.named(first)[("recipient_domains", 600)] == KEY_CAP
    assert engine.named(second)[("recipient_domains", 600)] == KEY_CAP  # a known key still counts


def test_a_lift_clears_the_windows_once_however_many_gateways_see_it(redis_server):
    engine = Engine([Rule("m", "ceiling", "messages", 600, 1e9),
                     Rule("d", "ceiling", "recipient_domains", 600, 1e9)])
    prefix = fresh_prefix()

    def message(i):
        return engine.tally({"ts": T0 + i, "system": "mfa", "event": "accepted", "size": 1,
                             "recipients": [f"x@d{i}.kz"]})

    async def go():
        a = RedisWindows(redis_server.url, prefix, engine.windows)
        b = RedisWindows(redis_server.url, prefix, engine.windows)
        for i in range(5):
            await count(a, message(i))
        a.reset("mfa", once="17")
        after_lift = await count(a, message(10))
        b.reset("mfa", once="17")  # the other gateway sees the same lift later
        after_second_look = await count(b, message(11))
        a.reset("mfa", once="18")  # a later suspension, lifted
        after_next_lift = await count(a, message(12))
        for w in (a, b):
            await w.close()
        return after_lift, after_second_look, after_next_lift

    after_lift, after_second_look, after_next_lift = asyncio.run(go())
    assert engine.named(after_lift) == {("messages", 600): 1, ("recipient_domains", 600): 1}
    assert engine.named(after_second_look) == {("messages", 600): 2, ("recipient_domains", 600): 2}
    assert engine.named(after_next_lift) == {("messages", 600): 1, ("recipient_domains", 600): 1}


def test_every_key_expires_and_is_named_as_the_releases_before_named_it(redis_server):
    engine = Engine(RULES)
    prefix = fresh_prefix()

    async def go():
        windows = RedisWindows(redis_server.url, prefix, engine.windows)
        for event in stream(random.Random(9), 300):
            if (tally := engine.tally(event)) is not None:
                await count(windows, tally)
        await windows.close()

    asyncio.run(go())
    client = redis.Redis.from_url(redis_server.url)
    keys = list(client.scan_iter(match=prefix + "*"))
    # the longest lived: what a system has sent to, two periods of it
    longest = 2 * SEEN_PERIOD
    assert keys and all(0 < client.ttl(k) <= longest for k in keys), [
        (k, client.ttl(k)) for k in keys if not 0 < client.ttl(k) <= longest]
    client.close()
    # named as every release so far named them: an upgraded gateway (or one
    # of the last release beside it) reads the same windows and the same
    # memory of the domains each system has mailed
    layout = re.compile(re.escape(prefix) + r"w:\{(mfa|mof|edu)\}:(s:\w+:\d+|k:\w+:\d+:(t|m|b:\d+)"
                        r"|seen:\w+:\d+(:n)?|h:\w+:\d+|history)")
    names = [k.decode() for k in keys]
    assert all(layout.fullmatch(k) for k in names), [k for k in names if not layout.fullmatch(k)]
    for kind in (":s:", ":t", ":seen:", ":h:", ":history"):
        assert any(kind in k for k in names), kind


def test_without_redis_the_process_counts_and_redis_takes_over_when_back(caplog):
    servers = [RedisServer().start()]
    engine = Engine([Rule("m", "ceiling", "messages", 600, 1e9)])
    prefix = fresh_prefix()

    def message(i):
        tally = engine.tally({"ts": T0 + i, "system": "mfa", "event": "accepted", "size": 1,
                              "recipients": ["x@d.kz"]})
        return tally, engine.local.count(tally)

    async def go():
        windows = RedisWindows(servers[0].url, prefix, engine.windows, retry=0.2)
        shared = await count(windows, *message(0))
        servers[0].stop()
        during = [await count(windows, *message(i)) for i in range(1, 4)]
        degraded = windows.degraded
        servers.append(RedisServer())
        servers[1].port = servers[0].port
        servers[1].start()  # back, empty
        await asyncio.sleep(0.3)
        back = await count(windows, *message(4))
        still_degraded = windows.degraded
        await windows.close()
        return shared, during, degraded, back, still_degraded

    try:
        shared, during, degraded, back, still_degraded = asyncio.run(go())
    finally:
        for server in servers:
            server.stop()
    assert engine.named(shared)[("messages", 600)] == 1
    # the process's own counts, which include what Redis had counted too
    assert [engine.named(c)[("messages", 600)] for c in during] == [2, 3, 4]
    assert degraded and "window counts in Redis unavailable" in caplog.text
    assert engine.named(back)[("messages", 600)] == 1 and not still_degraded
    assert "window counts in Redis back after" in caplog.text


def test_scripts_flushed_from_redis_are_loaded_again_without_losing_a_count(redis_server):
    engine = Engine([Rule("m", "ceiling", "messages", 600, 1e9)])

    async def go():
        windows = RedisWindows(redis_server.url, fresh_prefix(), engine.windows)
        seen = []
        for i in range(3):
            if i == 2:
                redis.Redis.from_url(redis_server.url).script_flush()
            tally = engine.tally({"ts": T0 + i, "system": "mfa", "event": "accepted",
                                  "size": 1, "recipients": ["x@d.kz"]})
            seen.append(engine.named(await count(windows, tally))[("messages", 600)])
        degraded = windows.degraded
        await windows.close()
        return seen, degraded

    seen, degraded = asyncio.run(go())
    assert seen == [1, 2, 3] and not degraded  # EMPTY fallback would have no window
