"""What the status endpoint and page say about a system: its state, the
suspension in plain figures, its restricted senders, its held mail, its windows against the limits
that apply to it, and its last 24 hours of traffic. Read-only: it gathers
from the suspensions, the judge (its windows, shared ones if there are) and
the hold."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mailgw.anomaly.judge import Judge
from mailgw.clock import Clock
from mailgw.config import System
from mailgw.state.records import Suspension
from mailgw.systems import SystemDirectory
from mailgw.wording import why


class StatusService:
    def __init__(self, *, directory: SystemDirectory, judge: Judge,
                 suspended: Callable[[str], Suspension | None],
                 held: Callable[[str], Awaitable[int]], clock: Clock,
                 listings: Callable[[], Awaitable[list[dict[str, Any]]]],
                 restricted: Callable[[str], list[Suspension]] = lambda system: [],
                 spared: Callable[[str], list[Suspension]] = lambda system: []):
        """`suspended(system)`: its suspension in force; `restricted(system)`:
        its senders' restrictions in force; `spared(system)`: the lifts of
        its senders with a grace running; `held(system)`: its own mail
        waiting at the gateway; `listings()`: the egress addresses' DNSBL
        states."""
        self.directory, self.judge, self.suspended = directory, judge, suspended
        self.restricted, self.spared = restricted, spared
        self.held, self.clock, self.listings = held, clock, listings

    async def status(self, system: System) -> dict[str, Any]:
        ts = self.clock.now()
        record = self.suspended(system.id)
        windows, counted_by = await self.judge.windows(system.id, ts)
        return {
            "system": system.id, "name": system.name,
            "state": "suspended" if record else "active",
            "suspension": None if record is None else self._shown(record),
            "restricted_senders": [{"sender": r.sender, **self._shown(r)}
                                   for r in self.restricted(system.id)],
            "spared_senders": [{"sender": r.sender, "until": r.grace_until, "by": r.lifted_by,
                                "reason": r.lift_reason} for r in self.spared(system.id)],
            "held": await self.held(system.id),
            "windows": {f"{m}/{w:g}s": v for (m, w), v in windows.items()},
            "limits": self.judge.limits(system.id, windows, ts),
            "counted_by": counted_by,
            "ts": ts,
        }

    def _shown(self, record: Suspension) -> dict[str, Any]:
        return {"id": record.id, "since": record.since, "by": record.by, "rule": record.rule,
                "observed": record.observed, "threshold": record.threshold,
                "window": record.window, "reason": record.reason,
                "top_domains": record.evidence.get("top_domains", []),
                "why": self._why(record)}

    def _why(self, record: Suspension) -> dict[str, str]:
        return why(record, self.judge.rule(record.rule) if record.rule else None)

    async def overview(self) -> list[dict[str, Any]]:
        """Every system's state (the operators' list)."""
        out = []
        for system in self.directory:
            record = self.suspended(system.id)
            out.append({"system": system.id, "name": system.name,
                         "state": "suspended" if record else "active",
                         "restricted_senders": len(self.restricted(system.id)),
                         "since": record.since if record else None,
                         "rule": record.rule if record else None,
                         "reason": record.reason if record else None,
                         "why": self._why(record) if record else None})
        return out

    async def dnsbl(self) -> list[dict[str, Any]]:
        """Each egress address on each zone: listed or not, since when, why."""
        return await self.listings()

    async def history(self, system: str) -> tuple[float, list[float]]:
        """The start of the 24 hours up to now, and the system's messages in
        each 10 minutes of them, oldest first."""
        return await self.judge.history(system, self.clock.now())
