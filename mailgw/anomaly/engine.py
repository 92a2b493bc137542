"""The anomaly engine: events in, decisions out. Pure: no I/O, no clock of its
own (time is each event's `ts`), so live traffic and `mailgw replay` run the
same code and reach the same decisions.

It counts only a system's own traffic: events about the gateway's own mail
(DSNs, notices: `origin` other than "system") and the gateway's refusals of
a suspended system (reason "suspended") are not the system's activity.
A system is suspended at most once until a `lifted` event for it, which also
clears its windows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mailgw.anomaly.rules import KEYED, Decision, Rule
from mailgw.anomaly.windows import Baseline, Counter, KeyCounter


class SystemState:
    """One system's windows: a Counter per (metric, window) and a KeyCounter
    per (keyed metric, window) that some rule needs, nothing more."""

    def __init__(self, rules: Iterable[Rule]):
        self.sums: dict[tuple[str, float], Counter] = {}
        self.keys: dict[tuple[str, float], KeyCounter] = {}
        for rule in rules:
            for metric in filter(None, (rule.metric, rule.per)):
                if metric in KEYED:
                    self.keys.setdefault((metric, rule.window), KeyCounter(rule.window))
                else:
                    self.sums.setdefault((metric, rule.window), Counter(rule.window))
        self.baselines: dict[str, Baseline] = {
            r.metric: Baseline() for r in rules if r.kind == "spike"}
        self._sums_of: dict[str, list[Counter]] = {}
        for (metric, _), counter in self.sums.items():
            self._sums_of.setdefault(metric, []).append(counter)
        self._keys_of: dict[str, list[KeyCounter]] = {}
        for (metric, _), kc in self.keys.items():
            self._keys_of.setdefault(metric, []).append(kc)

    def add(self, ts: float, metric: str, amount: float = 1.0) -> None:
        for counter in self._sums_of.get(metric, ()):
            counter.add(ts, amount)
        baseline = self.baselines.get(metric)
        if baseline is not None:
            baseline.add(ts, amount)

    def add_keys(self, ts: float, metric: str, keys: list[str]) -> None:
        for counter in self._keys_of.get(metric, ()):
            counter.add(ts, keys)

    def value(self, ts: float, metric: str, window: float) -> float:
        if metric == "recipient_domains":
            return self.keys[(metric, window)].distinct(ts)
        if metric == "top_recipient":
            return self.keys[(metric, window)].top(ts)
        return self.sums[(metric, window)].total(ts)


# the metrics each kind of event moves; only rules reading them are judged
_MOVES = {
    "accepted": {"messages", "recipients", "bytes", "recipient_domains", "top_recipient"},
    "delivered": {"attempts"},
    "bounced": {"attempts", "perm_failures"},
    "deferred": {"attempts", "deferrals"},
    "rejected": {"rejections"},
}


class Engine:
    def __init__(
        self, rules: list[Rule], overrides: Mapping[str, Mapping[str, float]] | None = None
    ):
        """`overrides`: system id -> rule name -> threshold for that system."""
        self.rules = rules
        self.overrides = overrides or {}
        self.systems: dict[str, SystemState] = {}
        self.suspended: set[str] = set()
        self._rules_for = {kind: [r for r in rules if r.metric in moved or r.per in moved]
                           for kind, moved in _MOVES.items()}

    def _state(self, system: str) -> SystemState:
        state = self.systems.get(system)
        if state is None:
            state = self.systems[system] = SystemState(self.rules)
        return state

    def baselines(self) -> dict[str, dict[str, Any]]:
        """Learned baselines, per system and metric, to keep across restarts."""
        return {system: {m: b.snapshot() for m, b in state.baselines.items()}
                for system, state in self.systems.items() if state.baselines}

    def restore_baselines(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        for system, metrics in data.items():
            state = self._state(system)
            for metric, snapshot in metrics.items():
                if metric in state.baselines:
                    state.baselines[metric] = Baseline.restore(snapshot)

    def evidence(self, system: str, ts: float) -> dict[str, Any]:
        """A snapshot of a system's windows, for the suspension record."""
        state = self.systems.get(system)
        if state is None:
            return {}
        counts = {f"{m}/{w:g}s": state.value(ts, m, w) for m, w in [*state.sums, *state.keys]}
        widest = max((w for m, w in state.keys if m == "recipient_domains"), default=None)
        top = state.keys[("recipient_domains", widest)].top_keys(ts, 5) if widest else []
        return {"counts": counts, "top_domains": top}

    def observe(self, event: Mapping[str, Any]) -> list[Decision]:
        system = event.get("system")
        kind = event.get("event")
        if system is None or event.get("origin", "system") != "system":
            return []
        ts = float(event["ts"])
        if kind == "lifted":
            # an operator judged the cause gone: counting starts afresh, or the
            # traffic that led to the suspension would bring it straight back;
            # what was learned of the system's usual traffic is kept
            self.suspended.discard(system)
            old = self.systems.pop(system, None)
            if old is not None:
                self._state(system).baselines.update(old.baselines)
            return []
        if kind == "suspended":
            self.suspended.add(system)
            return []
        state = self._state(system)
        if kind == "accepted":
            recipients = event.get("recipients") or []
            state.add(ts, "messages")
            state.add(ts, "recipients", len(recipients))
            state.add(ts, "bytes", event.get("size", 0))
            domains = [r.rpartition("@")[2].lower() for r in recipients]
            state.add_keys(ts, "recipient_domains", domains)
            state.add_keys(ts, "top_recipient", [r.lower() for r in recipients])
        elif kind in ("delivered", "bounced", "deferred"):
            state.add(ts, "attempts")
            if kind == "bounced":
                state.add(ts, "perm_failures")
            elif kind == "deferred":
                state.add(ts, "deferrals")
        elif kind == "rejected" and event.get("reason") != "suspended":
            state.add(ts, "rejections")
        else:
            return []
        return self._judge(ts, system, state, self._rules_for[kind])

    def _judge(self, ts: float, system: str, state: SystemState,
               rules: list[Rule]) -> list[Decision]:
        if system in self.suspended:
            return []
        mine = self.overrides.get(system, {})
        for rule in rules:
            threshold = mine.get(rule.name, rule.threshold)
            value = state.value(ts, rule.metric, rule.window)
            if rule.kind == "spike":
                other = state.baselines[rule.metric].expected(ts, rule.min_history)
            else:
                other = state.value(ts, rule.per, rule.window) if rule.per else None
            observed = rule.judge(value, other, threshold)
            if observed is not None:
                self.suspended.add(system)
                return [Decision(ts, system, rule.name, observed, threshold, rule.window)]
        return []
