"""Driving RedisWindows from synchronous tests: one event at a time, each
answered before the next, on a real Redis."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.judge import DECIDED, Judge
from mailgw.anomaly.rules import Decision
from mailgw.anomaly.tally import Counts, Tally
from mailgw.state.redis_windows import RedisWindows

_prefixes = itertools.count()
# what the backend would judge on without Redis: nothing, so a test whose
# counts did not come from Redis fails on a missing window
EMPTY = Counts([], (), {})


def fresh_prefix() -> str:
    return f"test{next(_prefixes)}:"


async def count(windows: RedisWindows, tally: Tally, fallback: Counts = EMPTY) -> Counts:
    done: asyncio.Future[Counts] = asyncio.get_running_loop().create_future()
    windows.submit(tally, fallback, lambda t, counts: done.set_result(counts))
    return await done


def run_on_redis(url: str, prefix: str, engine: Engine, events: Iterable[Mapping[str, Any]],
                 senders: Engine | None = None) -> list[tuple[int, Decision]]:
    """Like Engine.observe over `events` (and `senders`' too), through the
    judge as a gateway runs it, with the counts from Redis; each event
    judged before the next."""

    async def go() -> list[tuple[int, Decision]]:
        windows = RedisWindows(url, prefix, engine.windows, metrics=engine.metrics)
        of_senders = None if senders is None else RedisWindows(
            url, f"{prefix}u:", senders.windows, metrics=senders.metrics, along=windows)
        decided: list[Decision] = []
        judge = Judge(engine, suspend=decided.append, watch=decided.append, shared=windows,
                      senders=senders, shared_senders=of_senders)
        decisions = []
        try:
            for i, event in enumerate(events):
                if event["event"] in DECIDED:
                    judge.decided(event)
                else:
                    judge.observe(event)
                    await judge.settled(event["system"])
                decisions += [(i, d) for d in decided]
                decided.clear()
            assert not windows.degraded
        finally:
            await windows.close()
            if of_senders is not None:
                await of_senders.close()
        return decisions

    return asyncio.run(go())


def run_in_process(engine: Engine, events: Iterable[Mapping[str, Any]],
                   senders: Engine | None = None) -> list[tuple[int, Decision]]:
    """The same, counting in process: the judge of a gateway without Redis."""
    decided: list[Decision] = []
    judge = Judge(engine, suspend=decided.append, watch=decided.append, senders=senders)
    decisions = []
    for i, event in enumerate(events):
        (judge.decided if event["event"] in DECIDED else judge.observe)(event)
        decisions += [(i, d) for d in decided]
        decided.clear()
    return decisions
