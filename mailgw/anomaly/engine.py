"""The anomaly engine: events in, decisions out. Pure: no I/O, no clock of its
own (time is each event's `ts`), so live traffic and `mailgw replay` run the
same code and reach the same decisions.

An event becomes a Tally (what it adds to which windows, which windows the
rules then read); a windows backend applies it and answers with Counts; the
rules are judged on those. `observe` does all three with the in-process
backend (`mailgw replay`); the judge (judge.py) may instead send the tally
to a shared backend and call `judge` when the counts come back.

It counts only a system's own traffic: events about the gateway's own mail
(DSNs, notices: `origin` other than "system") and the gateway's refusals of
a suspended system (reason "suspended") are not the system's activity.
A system is suspended at most once until it is lifted (`lift`), which also
clears its windows. `tally` changes no state.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mailgw.anomaly.rules import Decision, Rule
from mailgw.anomaly.tally import KEYED, Counts, Tally, Window
from mailgw.anomaly.windows import Baseline, LocalWindows

# the metrics each kind of event moves; only rules reading them are judged
_MOVES = {
    "accepted": {"messages", "recipients", "bytes", "recipient_domains", "top_recipient"},
    "delivered": {"attempts"},
    "bounced": {"attempts", "perm_failures", "blocklist_rejections"},
    "deferred": {"attempts", "deferrals", "blocklist_rejections"},
    "rejected": {"rejections"},
}

# a remote refusal that names a blocklist: the message (or its sender) looks
# like spam to the world, the surest sign that a system is a danger to the
# gateway's addresses; "listed" alone would also match "user not listed"
BLOCKLIST = re.compile(
    r"blocked using|(?<!not )listed (?:in|on|at|by)"
    r"|\b(?:dnsbl|rbl|block ?list(?:ed)?|black ?list(?:ed)?|spamhaus|spamcop"
    r"|barracuda(?:central)?|sorbs|uceprotect|psbl|surbl|uribl)\b",
    re.IGNORECASE)


class Engine:
    def __init__(
        self, rules: list[Rule], overrides: Mapping[str, Mapping[str, float]] | None = None,
        history: bool = True,
    ):
        """`overrides`: system id -> rule name -> threshold for that system;
        `history`: keep each system's 24-hour traffic (the status page)."""
        self.rules = rules
        self.overrides = overrides or {}
        # every (metric, seconds) a rule reads; a window's id is its index here
        self.windows: list[Window] = sorted(
            {(m, r.window) for r in rules for m in (r.metric, r.per) if m})
        ids = {w: i for i, w in enumerate(self.windows)}
        self.local = LocalWindows(self.windows, history)
        self.suspended: set[str] = set()
        self.learned: dict[str, dict[str, Baseline]] = {}  # system -> metric -> baseline
        self._spiked = sorted({r.metric for r in rules if r.kind == "spike"})
        # per kind of event: the windows it adds to, the rules it may cross
        # (with the windows each reads), and all the windows those read
        self._sums = {kind: [(i, m) for i, (m, _) in enumerate(self.windows)
                             if m in moved and m not in KEYED] for kind, moved in _MOVES.items()}
        self._keys = {kind: [(i, m) for i, (m, _) in enumerate(self.windows)
                             if m in moved and m in KEYED] for kind, moved in _MOVES.items()}
        self._judged = {kind: [(r, ids[(r.metric, r.window)],
                                ids[(r.per, r.window)] if r.per else None)
                               for r in rules if r.metric in moved or r.per in moved]
                        for kind, moved in _MOVES.items()}
        self._reads = {kind: tuple(dict.fromkeys(i for _, v, per in judged
                                                 for i in (v, per) if i is not None))
                       for kind, judged in self._judged.items()}
        # every kind but "accepted" adds 1 to each metric it moves (a blocklist
        # refusal also to blocklist_rejections): its tally's sums are fixed
        self._units = {}
        for kind, moved in _MOVES.items():
            for blocked in (False, True):
                ones = moved if blocked else moved - {"blocklist_rejections"}
                self._units[kind, blocked] = (
                    tuple((i, 1.0) for i, m in self._sums[kind] if m in ones),
                    tuple((m, 1.0) for m in self._spiked if m in ones))
        domains = [i for i, (m, _) in enumerate(self.windows) if m == "recipient_domains"]
        # where the suspension record's top recipient domains come from: the widest
        self.top_domains_window: int | None = domains[-1] if domains else None

    def named(self, counts: Counts) -> dict[Window, float]:
        """`counts` by (metric, seconds) rather than window id."""
        return {self.windows[i]: v for i, v in counts.values.items()}

    def baselines(self) -> dict[str, dict[str, Any]]:
        """Learned baselines, per system and metric, to keep across restarts."""
        return {system: {m: b.snapshot() for m, b in metrics.items()}
                for system, metrics in self.learned.items()}

    def restore_baselines(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        for system, metrics in data.items():
            for metric, snapshot in metrics.items():
                if metric in self._spiked:
                    self.learned.setdefault(system, {})[metric] = Baseline.restore(snapshot)

    def suspend(self, system: str) -> None:
        """Suspended (by a decision elsewhere, or an operator): no decision on
        it until it is lifted."""
        self.suspended.add(system)

    def lift(self, system: str) -> None:
        """An operator judged the cause gone: counting starts afresh, or the
        traffic that led to the suspension would bring it straight back; what
        was learned of the system's usual traffic is kept."""
        self.suspended.discard(system)
        self.local.reset(system)

    def tally(self, event: Mapping[str, Any]) -> Tally | None:
        """What `event` adds to its system's windows, or None if it is not
        the system's traffic."""
        system = event.get("system")
        kind = event.get("event")
        if system is None or event.get("origin", "system") != "system":
            return None
        ts = float(event["ts"])
        if kind == "accepted":
            recipients = event.get("recipients") or []
            amounts = {"messages": 1.0, "recipients": float(len(recipients)),
                       "bytes": float(event.get("size", 0))}
            keys = tuple((i, tuple(r.rpartition("@")[2].lower() for r in recipients)
                          if metric == "recipient_domains" else
                          tuple(r.lower() for r in recipients))
                         for i, metric in self._keys["accepted"])
            return Tally(system, ts, kind,
                         tuple((i, amounts[m]) for i, m in self._sums["accepted"]), keys,
                         tuple((m, amounts[m]) for m in self._spiked if m in amounts),
                         self._reads[kind], 1.0)
        if kind not in _MOVES or (kind == "rejected" and event.get("reason") == "suspended"):
            return None
        blocked = kind in ("bounced", "deferred") and BLOCKLIST.search(
            str(event.get("response", ""))) is not None
        sums, hours = self._units[kind, blocked]
        return Tally(system, ts, kind, sums, (), hours, self._reads[kind])

    def reading(self, system: str, ts: float) -> Tally:
        """A tally that adds nothing and reads every window: the system's
        counts as they stand (the status endpoint)."""
        return Tally(system, ts, "read", (), (), (), tuple(range(len(self.windows))))

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
        mine = self.overrides.get(system)
        values = counts.values
        for rule, value_window, per_window in self._judged[tally.kind]:
            threshold = mine.get(rule.name, rule.threshold) if mine else rule.threshold
            if rule.kind == "ceiling":
                if values[value_window] <= threshold:
                    continue  # the common case, decided without a call
                other = None
            elif rule.kind == "spike":
                baseline = learned.get(rule.metric) if learned else None
                other = baseline.expected(ts, rule.min_history) if baseline else None
            else:
                other = values[per_window] if per_window is not None else None
            observed = rule.judge(values[value_window], other, threshold)
            if observed is not None:
                self.suspended.add(system)
                evidence = {f"{m}/{w:g}s": v for (m, w), v in self.named(counts).items()}
                return [Decision(ts, system, rule.name, observed, threshold, rule.window,
                                 evidence=evidence)]
        return []

    def observe(self, event: Mapping[str, Any]) -> list[Decision]:
        """Tally, count in process, judge: `mailgw replay`, where the recorded
        suspensions and lifts of the log take effect as they come."""
        kind, system = event.get("event"), event.get("system")
        if system is not None and kind in ("suspended", "lifted"):
            (self.suspend if kind == "suspended" else self.lift)(system)
            return []
        tally = self.tally(event)
        return self.judge(tally, self.local.count(tally)) if tally is not None else []
