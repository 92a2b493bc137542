"""The anomaly engine: events in, decisions out. Pure: no I/O, no clock of its
own (time is each event's `ts`), so live traffic and `mailgw replay` run the
same code and reach the same decisions.

An event becomes a Tally (what it adds to which windows, which windows the
rules then read); a windows backend applies it and answers with Counts; the
rules are judged on those. `observe` does all three with the in-process
backend; the Guard may instead send the tally to a shared backend and call
`judge` when the counts come back.

It counts only a system's own traffic: events about the gateway's own mail
(DSNs, notices: `origin` other than "system") and the gateway's refusals of
a suspended system (reason "suspended") are not the system's activity.
A system is suspended at most once until a `lifted` event for it, which also
clears its windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailgw.anomaly.rules import Decision, Rule
from mailgw.anomaly.tally import KEYED, Counts, Tally, Window
from mailgw.anomaly.windows import Baseline, LocalWindows

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
        self.local = LocalWindows()
        self.suspended: set[str] = set()
        self.learned: dict[str, dict[str, Baseline]] = {}  # system -> metric -> baseline
        self._spiked = sorted({r.metric for r in rules if r.kind == "spike"})
        windows: dict[str, set[float]] = {}
        for rule in rules:
            for metric in filter(None, (rule.metric, rule.per)):
                windows.setdefault(metric, set()).add(rule.window)
        self.windows = {m: sorted(ws) for m, ws in windows.items()}  # what the rules read
        self._rules_for = {kind: [r for r in rules if r.metric in moved or r.per in moved]
                           for kind, moved in _MOVES.items()}
        self._reads: dict[str, tuple[Window, ...]] = {kind: tuple(dict.fromkeys(
            (m, r.window) for r in rules_ for m in (r.metric, r.per) if m))
            for kind, rules_ in self._rules_for.items()}
        domains = self.windows.get("recipient_domains")
        self.top_domains_window: Window | None = (
            ("recipient_domains", domains[-1]) if domains else None)

    def baselines(self) -> dict[str, dict[str, Any]]:
        """Learned baselines, per system and metric, to keep across restarts."""
        return {system: {m: b.snapshot() for m, b in metrics.items()}
                for system, metrics in self.learned.items()}

    def restore_baselines(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        for system, metrics in data.items():
            for metric, snapshot in metrics.items():
                if metric in self._spiked:
                    self.learned.setdefault(system, {})[metric] = Baseline.restore(snapshot)

    def tally(self, event: Mapping[str, Any]) -> Tally | None:
        """What `event` adds to its system's windows, or None if it is not
        the system's traffic. Suspensions and lifts change the engine's own
        state here."""
        system = event.get("system")
        kind = event.get("event")
        if system is None or event.get("origin", "system") != "system":
            return None
        ts = float(event["ts"])
        if kind == "lifted":
            # an operator judged the cause gone: counting starts afresh, or the
            # traffic that led to the suspension would bring it straight back;
            # what was learned of the system's usual traffic is kept
            self.suspended.discard(system)
            self.local.reset(system)
            return None
        if kind == "suspended":
            self.suspended.add(system)
            return None
        if kind == "accepted":
            recipients = event.get("recipients") or []
            amounts = {"messages": 1.0, "recipients": float(len(recipients)),
                       "bytes": float(event.get("size", 0))}
            keys = {"recipient_domains": tuple(r.rpartition("@")[2].lower() for r in recipients),
                    "top_recipient": tuple(r.lower() for r in recipients)}
        elif kind in ("delivered", "bounced", "deferred"):
            amounts = {"attempts": 1.0}
            if kind == "bounced":
                amounts["perm_failures"] = 1.0
            elif kind == "deferred":
                amounts["deferrals"] = 1.0
            keys = {}
        elif kind == "rejected" and event.get("reason") != "suspended":
            amounts, keys = {"rejections": 1.0}, {}
        else:
            return None
        windows = self.windows
        return Tally(
            system, ts, kind,
            sums=tuple((m, w, a) for m, a in amounts.items() if m not in KEYED
                       for w in windows.get(m, ())),
            keys=tuple((m, w, k) for m, k in keys.items() for w in windows.get(m, ())),
            hours=tuple((m, amounts[m]) for m in self._spiked if m in amounts),
            reads=self._reads[kind],
        )

    def judge(self, tally: Tally, counts: Counts) -> list[Decision]:
        """The rules on the counts that `tally` led to: a suspension if one
        is crossed and the system is not suspended already."""
        system, ts = tally.system, tally.ts
        learned = self.learned.get(system)
        for metric, count in counts.hours.items():
            if learned is None:
                learned = self.learned[system] = {}
            baseline = learned.get(metric)
            if baseline is None:
                baseline = learned[metric] = Baseline()
            baseline.seen(ts, count)
        if system in self.suspended:
            return []
        mine = self.overrides.get(system, {})
        values = counts.values
        for rule in self._rules_for[tally.kind]:
            threshold = mine.get(rule.name, rule.threshold)
            value = values[(rule.metric, rule.window)]
            if rule.kind == "spike":
                baseline = learned.get(rule.metric) if learned else None
                other = baseline.expected(ts, rule.min_history) if baseline else None
            else:
                other = values[(rule.per, rule.window)] if rule.per else None
            observed = rule.judge(value, other, threshold)
            if observed is not None:
                self.suspended.add(system)
                evidence = {f"{m}/{w:g}s": v for (m, w), v in values.items()}
                return [Decision(ts, system, rule.name, observed, threshold, rule.window,
                                 evidence=evidence)]
        return []

    def observe(self, event: Mapping[str, Any]) -> list[Decision]:
        """Tally, count in process, judge: `mailgw replay` and the embedded gateway."""
        tally = self.tally(event)
        return self.judge(tally, self.local.count(tally)) if tally is not None else []
