"""The judge: each system's traffic counted as it happens, the rules judged on
it, and what crosses one handed on as a decision.

It owns the engine and the windows: in process always, and, with `shared`
(Redis), across every gateway too, judged on the shared counts when they
come back and on the in-process ones while Redis is away. It listens to the
event bus like any other record keeper; suspensions tell it in so many
words what was decided elsewhere (`suspended`, `lifted`). Nothing else
touches the engine; the status page reads through the views at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.rules import Decision, Rule
from mailgw.anomaly.tally import HISTORY_STEP, HISTORY_STEPS, Counts, SharedWindows, Tally
from mailgw.events import Event
from mailgw.senders import subject


class Judge:
    def __init__(self, engine: Engine, *, suspend: Callable[[Decision], None],
                 watch: Callable[[Decision], None], shared: SharedWindows | None = None):
        """`suspend(decision)`, `watch(decision)`: a rule was crossed, with
        strong or weak evidence (on the event loop)."""
        self.engine, self.shared = engine, shared
        self.suspend, self.watch = suspend, watch

    def observe(self, event: Event) -> None:
        """A subscriber of the event bus: count the event if it is a system's
        traffic, and judge the rules it may cross."""
        tally = self.engine.tally(event)
        if tally is None:
            return
        counts = self.engine.local.count(tally)
        if self.shared is None:
            self._judge(tally, counts)
        else:
            self.shared.submit(tally, counts, self._judge)

    def _judge(self, tally: Tally, counts: Counts) -> None:
        for decision in self.engine.judge(tally, counts):
            (self.suspend if decision.action == "suspend" else self.watch)(decision)

    async def settled(self, system: str) -> None:
        """Return once the system's events so far are judged: with shared
        counts that is a round trip away, and a transaction must not slip in
        between the event that crosses a rule and the suspension."""
        if self.shared is not None:
            await self.shared.settled(system)

    def suspended(self, system: str) -> None:
        """Suspended elsewhere (an operator, another gateway): no decision on
        it until it is lifted."""
        self.engine.suspend(system)

    def lifted(self, system: str, once: str) -> None:
        """Lifted: it is judged afresh, on windows cleared here and, once per
        lift `once` whatever the number of gateways, in the shared ones."""
        self.engine.lift(system)
        if self.shared is not None:
            self.shared.reset(system, once)

    def restricted(self, system: str, sender: str) -> None:
        """One sender of the system restricted: no decision on it until lifted."""
        self.engine.suspend(subject(system, sender))

    def unrestricted(self, system: str, sender: str, once: str) -> None:
        """That sender's restriction lifted: it is judged afresh, as `lifted`."""
        self.lifted(subject(system, sender), once)

    def set_overrides(self, overrides: Mapping[str, Mapping[str, float]]) -> None:
        """Per-system thresholds (a config reload)."""
        self.engine.overrides = overrides

    def baselines(self) -> dict[str, dict[str, Any]]:
        return self.engine.baselines()

    def restore_baselines(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        self.engine.restore_baselines(data)

    # --- views, for the suspension record and the status page -----------------

    def rule(self, name: str) -> Rule | None:
        """The rule of that name, as configured (None: no such rule now)."""
        return next((r for r in self.engine.rules if r.name == name), None)

    async def top_domains(self, system: str, since: float, n: int = 5) -> list[str]:
        """The recipient domains the system mailed most, in its widest window."""
        window = self.engine.top_domains_window
        if window is None:
            return []
        top = await self.shared.top_keys(system, window, n) if self.shared else None
        return top if top is not None else self.engine.local.top_keys(system, since, window, n)

    async def windows(self, system: str, ts: float) -> tuple[dict[tuple[str, float], float], str]:
        """Every window of the system by (metric, seconds), and whose counts
        they are: all instances' (shared) or this one's."""
        tally = self.engine.reading(system, ts)
        counts = await self.shared.counts(tally) if self.shared is not None else None
        if counts is not None:
            return self.engine.named(counts), "all instances"
        return self.engine.named(self.engine.local.count(tally)), "this instance"

    def limits(self, system: str, windows: Mapping[tuple[str, float], float],
               ts: float) -> list[dict[str, Any]]:
        """Each rule as it applies to `system`: its threshold (the system's
        own if set) and where the system stands against it now."""
        mine = self.engine.overrides.get(system, {})
        out = []
        for rule in self.engine.rules:
            threshold = mine.get(rule.name, rule.threshold)
            current = windows.get((rule.metric, rule.window), 0.0)
            limit: float | None = threshold
            if rule.kind == "ratio":
                per = windows.get((rule.per, rule.window), 0.0) if rule.per else 0.0
                current = round(current / per, 4) if per else 0.0
            elif rule.kind == "spike":
                baseline = self.engine.learned.get(system, {}).get(rule.metric)
                usual = baseline.expected(ts, rule.min_history) if baseline else None
                limit = None if usual is None else max(rule.min_sample, threshold * usual)
            out.append({"rule": rule.name, "kind": rule.kind, "metric": rule.metric,
                        "per": rule.per, "window": rule.window, "threshold": threshold,
                        "limit": limit, "current": current,
                        "min_sample": rule.min_sample if rule.kind != "ceiling" else None})
        return out

    async def history(self, system: str, ts: float) -> tuple[float, list[float]]:
        """The start of the 24 hours up to `ts`, and the system's messages in
        each 10 minutes of them, oldest first."""
        steps = await self.shared.history(system, ts) if self.shared is not None else None
        if steps is None:
            steps = self.engine.local.history(system, ts)
        last = int(ts // HISTORY_STEP)
        first = last - HISTORY_STEPS + 1
        return first * HISTORY_STEP, [steps.get(s, 0.0) for s in range(first, last + 1)]
