"""What the status endpoint and page say about a system: its state, the
suspension in plain figures, its held mail, its windows against the limits
that apply to it, and its last 24 hours of traffic. Read-only: it gathers
from the guard, the windows (shared ones if there are) and the spool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.tally import HISTORY_STEP, HISTORY_STEPS, Counts, SharedWindows
from mailgw.blocklist_guard.notices import explain
from mailgw.blocklist_guard.suspensions import Guard
from mailgw.clock import Clock
from mailgw.config import System
from mailgw.systems import SystemDirectory


class StatusService:
    def __init__(self, *, directory: SystemDirectory, engine: Engine, guard: Guard,
                 shared: SharedWindows | None, held: Callable[[str], int], clock: Clock,
                 executor: Executor, listings: Callable[[], list[dict[str, Any]]]):
        """`held(system)`: blocking, the system's mail held at the gateway;
        `listings()`: blocking, the egress addresses' DNSBL states."""
        self.directory, self.engine, self.guard, self.shared = directory, engine, guard, shared
        self.held, self.clock, self.executor, self.listings = held, clock, executor, listings

    async def _counts(self, system: str, ts: float) -> tuple[Counts, str]:
        tally = self.engine.reading(system, ts)
        if self.shared is not None:
            counts = await self.shared.counts(tally)
            if counts is not None:
                return counts, "all instances"
        return self.engine.local.count(tally), "this instance"

    def limits(self, system: System, counts: Counts, ts: float) -> list[dict[str, Any]]:
        """Each rule as it applies to `system`: its threshold (the system's
        own if set) and where the system stands against it now."""
        named = self.engine.named(counts)
        out = []
        for rule in self.engine.rules:
            threshold = system.anomaly.get(rule.name, rule.threshold)
            current = named.get((rule.metric, rule.window), 0.0)
            limit: float | None = threshold
            if rule.kind == "ratio":
                per = named.get((rule.per, rule.window), 0.0) if rule.per else 0.0
                current = round(current / per, 4) if per else 0.0
            elif rule.kind == "spike":
                baseline = self.engine.learned.get(system.id, {}).get(rule.metric)
                usual = baseline.expected(ts, rule.min_history) if baseline else None
                limit = None if usual is None else max(rule.min_sample, threshold * usual)
            out.append({"rule": rule.name, "kind": rule.kind, "metric": rule.metric,
                        "per": rule.per, "window": rule.window, "threshold": threshold,
                        "limit": limit, "current": current,
                        "min_sample": rule.min_sample if rule.kind != "ceiling" else None})
        return out

    async def status(self, system: System) -> dict[str, Any]:
        ts = self.clock.now()
        record = self.guard.suspended(system.id)
        held = await asyncio.get_running_loop().run_in_executor(self.executor, self.held,
                                                                system.id)
        counts, counted_by = await self._counts(system.id, ts)
        return {
            "system": system.id, "name": system.name,
            "state": "suspended" if record else "active",
            "suspension": None if record is None else {
                "id": record.id, "since": record.since, "by": record.by, "rule": record.rule,
                "observed": record.observed, "threshold": record.threshold,
                "window": record.window, "reason": record.reason,
                "top_domains": record.evidence.get("top_domains", []),
                "why": explain(record),
            },
            "held": held,
            "windows": {f"{m}/{w:g}s": v for (m, w), v in self.engine.named(counts).items()},
            "limits": self.limits(system, counts, ts),
            "counted_by": counted_by,
            "ts": ts,
        }

    async def overview(self) -> list[dict[str, Any]]:
        """Every system's state (the operators' list)."""
        out = []
        for system in self.directory:
            record = self.guard.suspended(system.id)
            out.append({"system": system.id, "name": system.name,
                         "state": "suspended" if record else "active",
                         "since": record.since if record else None,
                         "rule": record.rule if record else None,
                         "reason": record.reason if record else None})
        return out

    async def dnsbl(self) -> list[dict[str, Any]]:
        """Each egress address on each zone: listed or not, since when, why."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.listings)

    async def history(self, system: str) -> tuple[float, list[float]]:
        """The start of the 24 hours up to now, and the system's messages in
        each 10 minutes of them, oldest first."""
        ts = self.clock.now()
        steps = await self.shared.history(system, ts) if self.shared is not None else None
        if steps is None:
            steps = self.engine.local.history(system, ts)
        last = int(ts // HISTORY_STEP)
        first = last - HISTORY_STEPS + 1
        return first * HISTORY_STEP, [steps.get(s, 0.0) for s in range(first, last + 1)]
