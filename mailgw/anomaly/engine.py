"""The anomaly engine: events in, decisions out. Pure: no I/O, no clock of its
own (time is each event's `ts`), so live traffic and `mailgw replay` run the
same code and reach the same decisions.

An event becomes a Tally (what it adds to which windows, which windows the
rules then read); a windows backend applies it and answers with Counts; the
rules are judged on those. `observe` does all three with the in-process
backend (`mailgw replay`); the judge (judge.py) may instead send the tally
to a shared backend and call `judge` when the counts come back.

It counts only a system's own traffic: events about the gateway's own mail
(DSNs, notices: `origin` other than "system") and refusals that say nothing
of what the system does (its suspension, the gateway's own trouble:
metrics.NOT_THE_SYSTEMS) are not the system's activity.
A system is suspended at most once until it is lifted (`lift`), which also
clears its windows. `tally` changes no state.

An engine given `senders` (an Attribution) judges each sender inside its
system instead: its windows, rules and decisions are per subject ("system
sender", senders.subject), a decision names the sender (a restriction of
that sender alone), and a novel metric asks the system's memory, so "a
domain never mailed" means never by the system, not by a new mailbox. A
sender is forgotten once its windows are empty (idle for the longest
window and a bucket), and at most `max_senders` of a system are counted at
a time (the one idle longest gives way): memory follows the senders
sending now. A decision's `first_seen` is set for a sender its system had
not seen for a month or more (the rotation of a spammer's addresses).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mailgw.anomaly.metrics import HISTORY, METRICS, NOT_THE_SYSTEMS, Amount, Metric, kept
from mailgw.anomaly.rules import Action, Decision, Reading, Rule, Verdict
from mailgw.anomaly.tally import Counts, Tally, Window
from mailgw.anomaly.windows import BUCKETS, Baseline, LocalWindows
from mailgw.senders import Attribution, split, subject


class _Reads:
    """The windows one rule reads, by id (-1: none), and the name its usual
    is learned under (Rule.learns, worked out once)."""

    __slots__ = ("value", "per", "long_value", "long_per", "learns")

    def __init__(self, value: int, per: int, long_value: int, long_per: int,
                 learns: str | None) -> None:
        self.value = value
        self.per = per
        self.long_value = long_value
        self.long_per = long_per
        self.learns = learns


class Engine:
    def __init__(
        self, rules: list[Rule], overrides: dict[str, dict[str, Rule]] | None = None,
        history: bool = True, metrics: Mapping[str, Metric] = METRICS,
        senders: Attribution | None = None, max_senders: int = 2000,
        counted: Iterable[Window] = (),
        remembers: Engine | None = None,
    ):
        """`overrides`: system id -> rule name -> that rule as the system has
        it, with its own figures (Judge.tunings);
        `history`: keep each system's 24-hour traffic (the status page);
        `metrics`: what the rules' metrics count (metrics.py);
        `senders`: judge each sender, attributed so (module docstring);
        `counted`: windows to count although no rule here reads them (a
        sender's share of what a system rule judged); `remembers`: the
        engine whose memory of the keys each system has sent to this one
        shares (a system's, for its senders': one memory, asked once an
        event when both tallies share what they know)."""
        scope = "system" if senders is None else "sender"
        if any(r.scope != scope for r in rules):
            raise ValueError(f"an engine of scope {scope!r} judges only rules of that scope")
        self.rules = rules
        self.senders = senders
        self.overrides = overrides or {}
        self.metrics = metrics
        # every (metric, seconds) a rule reads, over its window and over its
        # baseline; a window's id is its index here
        self.windows: list[Window] = sorted(
            {(m, w) for r in rules for m in (r.metric, r.per) if m
             for w in (r.window, r.baseline) if w} | set(counted))
        ids = {w: i for i, w in enumerate(self.windows)}
        # a sender's windows are empty a window and a bucket after its last
        # message: it is forgotten then (what it is usually like goes with it)
        judged = max((r.window for r in rules), default=0.0)
        judged = max([judged, *(seconds for _, seconds in counted)])
        self.local: LocalWindows = LocalWindows(self.windows, history and senders is None, metrics,
                                  cap=max_senders if senders is not None else 0,
                                  idle=judged * (1 + 1 / BUCKETS) if senders is not None else 0,
                                  on_evict=self._forget,
                                  memory=remembers.local.memory if remembers else None)
        self.suspended: set[str] = set()
        self.wary: set[str] = set()  # see `beware`
        # (system, rule) -> when it was last crossed at watch strength (`judge`)
        self.watched: dict[tuple[str, str], float] = {}
        # when each system was first counted: how much history its windows hold
        self.first_seen: dict[str, float] = {}
        # senders new to their system (never seen in its memory) when first counted
        self.newcomers: dict[str, float] = {}
        self.learned: dict[str, dict[str, Baseline]] = {}  # system -> metric -> baseline
        # the summed metrics spike rules judge by hour of the week (learned
        # baselines, told each clock hour's count by the windows backend)
        self._spiked = sorted({r.metric for r in rules
                               if r.kind == "spike" and metrics[r.metric].how == "sum"})
        # every hour-of-week baseline the rules read, by the name it is learned under
        self._learns = {name for r in rules if (name := r.learns) is not None}
        # the metrics each kind of event moves; only rules reading them are judged
        moves = {kind: {name for name, m in metrics.items() if kind in m.events}
                 for metric in metrics.values() for kind in metric.events}
        # per kind of event: the windows it adds to, the rules it may cross
        # (with the windows each reads), and all the windows those read
        self._sums = {kind: [(i, m) for i, (m, _) in enumerate(self.windows)
                             if m in moved and metrics[m].how == "sum"]
                      for kind, moved in moves.items()}
        # a metric counted per key: its keys (worked out once an event), the
        # windows that count them (one of each count two windows share)
        first: dict[Window, int] = {}
        for i, k in enumerate(kept(self.windows, metrics)):
            first.setdefault(k.counter, i)
        counts = sorted(first.values())
        self._keys = {kind: tuple(
            (keys, windows) for m in sorted(moved) if (keys := metrics[m].keys) is not None
            and metrics[m].how != "novel"
            and (windows := tuple(i for i in counts if self.windows[i][0] == m)))
            for kind, moved in moves.items()}
        # a novel metric: its keys, and every window of it that adds their count
        self._novel = {kind: tuple(
            (m, keys, tuple(i for i, (wm, _) in enumerate(self.windows) if wm == m))
            for m in sorted(moved) if metrics[m].how == "novel"
            and (keys := metrics[m].keys) is not None
            and any(wm == m for wm, _ in self.windows))
            for kind, moved in moves.items()}
        self._judged = {kind: [(r, _Reads(
            ids[(r.metric, r.window)], ids[(r.per, r.window)] if r.per else -1,
            ids[(r.metric, r.baseline)] if r.baseline else -1,
            ids[(r.per, r.baseline)] if r.per and r.baseline else -1, r.learns))
            for r in rules if r.metric in moved or r.per in moved]
            for kind, moved in moves.items()}
        self._reads = {kind: tuple(dict.fromkeys(
            i for _, r in judged for i in (r.value, r.per, r.long_value, r.long_per) if i >= 0))
                       for kind, judged in self._judged.items()}
        # per kind of event: the per-key spike rules' windows whose peak each
        # clock hour their baselines learn (read, so in every backend's counts)
        self._peaks = {kind: tuple((name, reads.value) for r, reads in judged
                                   if r.per_key and (name := reads.learns) is not None)
                       for kind, judged in self._judged.items()}
        # what each kind adds to the summed metrics its tally carries (to a
        # window, a learned baseline's hour, the history): the same amount
        # every time, or one worked out from the event
        carried = {m for m, _ in self.windows} | set(self._spiked) | {HISTORY}
        self._constant: dict[str, dict[str, float]] = {kind: {} for kind in moves}
        self._computed: dict[str, list[tuple[str, Amount]]] = {kind: [] for kind in moves}
        for kind, moved in moves.items():
            for m in moved & carried:
                adds = metrics[m].adds
                if metrics[m].how != "sum":
                    continue  # counted per key: `_keys`
                if callable(adds):
                    self._computed[kind].append((m, adds))
                else:
                    self._constant[kind][m] = adds
        # a kind that adds only constant amounts makes the same sums every
        # time: built once here, not per event
        self._fixed = {kind: self._added(kind, self._constant[kind]) for kind in moves
                       if not self._keys[kind] and not self._computed[kind]
                       and not self._novel[kind]}
        domains = [i for i, (m, _) in enumerate(self.windows) if m == "recipient_domains"]
        # where the suspension record's top recipient domains come from: the widest
        self.top_domains_window: int | None = domains[-1] if domains else None

    def window_of(self, metric: str, seconds: float) -> int | None:
        """The id of the window (metric, seconds), if the rules read it."""
        for i, window in enumerate(self.windows):
            if window == (metric, seconds):
                return i
        return None

    def now(self, key: str, ts: float) -> dict[Window, float]:
        """Every window of `key` (a system, or a sender) as it stands in
        process, by (metric, seconds); counts nothing, moves no sender up."""
        return {window: self.local.read(key, i, ts) for i, window in enumerate(self.windows)}

    def named(self, counts: Counts) -> dict[Window, float]:
        """`counts` by (metric, seconds) rather than window id."""
        return {self.windows[i]: counts.values[i] for i in counts.read}

    def baselines(self) -> dict[str, dict[str, Any]]:
        """Learned baselines, per system and metric, to keep across restarts."""
        return {system: {m: b.snapshot() for m, b in metrics.items()}
                for system, metrics in self.learned.items()}

    def restore_baselines(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        for system, metrics in data.items():
            for metric, snapshot in metrics.items():
                if metric in self._learns:
                    self.learned.setdefault(system, {})[metric] = Baseline.restore(snapshot)

    def suspend(self, system: str) -> None:
        """Suspended (by a decision elsewhere, or an operator): no decision on
        it until it is lifted."""
        self.suspended.add(system)

    def beware(self, system: str, wary: bool) -> None:
        """While one of its senders is restricted, a system is suspect: a rule
        that may suspend it does so on the evidence that would otherwise only
        watch (a compromise known inside raises the odds of more)."""
        (self.wary.add if wary else self.wary.discard)(system)

    def relent(self, system: str) -> None:
        """Its suspension given way to a sender's restriction: judged on."""
        self.suspended.discard(system)

    def crossed_without(self, system: str, ts: float, name: str,
                        less: Mapping[Window, float]) -> bool:
        """Whether rule `name` would suspend `system` on its counts in
        process less `less` (some of its senders' counts, by window): if
        not, the trouble is theirs."""
        rule = next(r for r in self.rules if r.name == name)
        mine = self.overrides.get(system)
        if mine is not None:
            rule = mine.get(name, rule)
        counts = self.now(system, ts)

        def value(metric: str | None, seconds: float | None) -> float:
            if not metric or not seconds:
                return 0.0
            return max(0.0, counts.get((metric, seconds), 0.0) - less.get((metric, seconds), 0.0))

        verdict = rule.judge(Reading(
            value(rule.metric, rule.window), value(rule.per, rule.window),
            value(rule.metric, rule.baseline), value(rule.per, rule.baseline),
            self.usual(system, rule, ts), ts - self.first_seen.get(system, ts)),
            rule.threshold)
        return verdict is not None and self._acts(system, rule, verdict) == "suspend"

    def usual(self, key: str, rule: Rule, ts: float) -> float | None:
        """A spike rule's learned usual (None: another kind, or not learned yet)."""
        return _usual(self.learned.get(key), rule, rule.learns, ts)

    def _acts(self, key: str, rule: Rule, verdict: Verdict) -> Action:
        """A verdict's action; evidence that only watches suspends a wary system."""
        if verdict.action == "watch" and key in self.wary and rule.stops:
            return "suspend"
        return verdict.action

    def lift(self, system: str) -> None:
        """An operator judged the cause gone: counting starts afresh, or the
        traffic that led to the suspension would bring it straight back; what
        was learned of the system's usual traffic is kept."""
        self.suspended.discard(system)
        self.local.reset(system)
        self.first_seen.pop(system, None)  # its windows hold no history now

    def _forget(self, key: str) -> None:
        """A sender whose windows gave way (the cap): what was kept of it goes too."""
        self.first_seen.pop(key, None)
        self.newcomers.pop(key, None)
        self.learned.pop(key, None)
        for rule in self.rules:
            self.watched.pop((key, rule.name), None)

    def tally(self, event: dict[str, Any], known: dict[Any, Any] | None = None
              ) -> Tally | None:
        """What `event` adds to its system's (or sender's) windows, or None
        if it is not the system's traffic (or, judging senders, nobody's).
        `known`: what the metrics' functions made of this event already (the
        other engine's tally of it), by function; filled in as they run."""
        system = event.get("system")
        kind = event.get("event")
        if system is None or event.get("origin", "system") != "system":
            return None
        ts = float(event["ts"])
        if kind not in self._constant or (
                kind == "rejected" and event.get("reason") in NOT_THE_SYSTEMS):
            return None
        key = system
        if self.senders is not None:
            sender = self.senders.of_event(event)
            if sender is None:
                return None
            key = subject(system, sender)
        memory = system if self.senders is not None else ""
        fixed = self._fixed.get(kind)
        if fixed is not None:
            sums, hours, traffic = fixed
            return Tally(key, ts, kind, sums, (), hours, self._reads[kind], traffic,
                         memory=memory)
        if known is None:
            known = {}
        amounts = self._constant[kind].copy()
        for m, amount in self._computed[kind]:
            amounts[m] = _made(known, amount, event)
        sums, hours, traffic = self._added(kind, amounts)
        return Tally(key, ts, kind, sums,
                     tuple((i, counted) for keys, windows in self._keys[kind]
                           for counted in (_made(known, keys, event),) for i in windows),
                     hours, self._reads[kind], traffic,
                     tuple((m, _made(known, keys, event), windows)
                           for m, keys, windows in self._novel[kind]),
                     memory)

    def _added(self, kind: str, amounts: dict[str, float]
               ) -> tuple[tuple[tuple[int, float], ...], tuple[tuple[str, float], ...], float]:
        """An event of `kind`'s sums, hours and history, from what it adds to
        each metric."""
        return (tuple((i, amounts[m]) for i, m in self._sums[kind]),
                tuple((m, amounts[m]) for m in self._spiked if m in amounts),
                amounts.get(HISTORY, 0.0))

    def reading(self, system: str, ts: float) -> Tally:
        """A tally that adds nothing and reads every window: the system's
        counts as they stand (the status endpoint)."""
        return Tally(system, ts, "read", (), (), (), tuple(range(len(self.windows))))

    def judge(self, tally: Tally, counts: Counts) -> list[Decision]:
        """The rules on the counts that `tally` led to: a suspension if one
        is crossed and the system is not suspended already (at most one),
        else a watch for each rule whose evidence is weaker (each rule once
        while it stays crossed)."""
        key, ts = tally.system, tally.ts
        learned = self.learned.get(key)
        values = counts.values
        peaks = self._peaks[tally.kind]
        if counts.hours or peaks:
            if learned is None:
                learned = self.learned[key] = {}
            # a summed metric's count this clock hour; a per-key one's window now
            for name, count in counts.hours.items():
                _learn(learned, name, ts, count)
            for name, i in peaks:
                _learn(learned, name, ts, values[i])
        first = self.first_seen.get(key)
        system, sender = split(key) if self.senders is not None else (key, None)
        if first is None:
            first = self.first_seen[key] = ts
            if sender is not None and self.local.first_time(system, sender, ts):
                self.newcomers[key] = ts
        if key in self.suspended:
            return []
        mine = self.overrides.get(system)
        watches: list[Decision] = []
        for rule, reads in self._judged[tally.kind]:
            if mine is not None:
                rule = mine.get(rule.name, rule)
            threshold = rule.threshold
            value = values[reads.value]
            # the common cases, decided without a call: under a ceiling, or
            # fewer than the least count any rule acts on (Rule.judge)
            if value < rule.min_count or value <= 0 or (
                    rule.kind == "ceiling" and value <= threshold):
                continue
            usual = _usual(learned, rule, reads.learns, ts) if reads.learns else None
            per = values[reads.per] if reads.per >= 0 else 0.0
            if rule.beneath(value, per, usual, threshold):
                continue
            verdict = rule.judge(Reading(
                value, per, values[reads.long_value] if reads.long_value >= 0 else 0.0,
                values[reads.long_per] if reads.long_per >= 0 else 0.0, usual, ts - first),
                threshold)
            if verdict is None:
                continue
            action = self._acts(key, rule, verdict)
            if action == "watch":
                # one alert while the rule stays crossed: again only after
                # a whole window without (a reporting rush is one alert a
                # day, not one an hour)
                last = self.watched.get((key, rule.name))
                self.watched[(key, rule.name)] = ts
                if last is not None and ts - last < rule.window:
                    continue
            decision = Decision(
                ts, system, rule.name, verdict.observed, threshold, rule.window,
                evidence={f"{m}/{w:g}s": v for (m, w), v in self.named(counts).items()},
                action=action, usual=verdict.usual, expected=verdict.expected,
                surprise=verdict.surprise, sender=sender, first_seen=self.newcomers.get(key))
            if action == "suspend":
                self.suspended.add(key)
                return [decision]
            watches.append(decision)
        return watches

    def observe(self, event: dict[str, Any]) -> list[Decision]:
        """Tally, count in process, judge, the recorded suspensions and lifts
        taking effect as they come (one engine alone; the judge runs both)."""
        kind, system = event.get("event"), event.get("system")
        if system is not None and kind in ("suspended", "lifted"):
            (self.suspend if kind == "suspended" else self.lift)(system)
            return []
        tally = self.tally(event)
        return self.judge(tally, self.local.count(tally)) if tally is not None else []


def _made(known: dict[Any, Any], made: Any, event: dict[str, Any]) -> Any:
    """What the metric function `made` makes of `event`, worked out once:
    a system's and its sender's engines share the work, and the very same
    keys let the memory of keys seen answer both alike (windows.Seen)."""
    out = known.get(made)
    if out is None:
        out = known[made] = made(event)
    return out


def _learn(learned: dict[str, Baseline], name: str, ts: float, count: float) -> None:
    baseline = learned.get(name)
    if baseline is None:
        baseline = learned[name] = Baseline()
    baseline.seen(ts, count)


# a per-key spike's usual is the peak of this busiest hour of the learned
# week: a daily batch recurs in five hours of it, one odd stretch (a loop
# of a few hours, before it is stopped) is not the usual
BUSY_RANK = 5


def _usual(learned: Mapping[str, Baseline] | None, rule: Rule, name: str | None,
           ts: float) -> float | None:
    """A spike rule's learned usual (learned under `name`, its `learns`): a
    summed metric's for the hour of the week `ts` falls in; a per-key
    metric's, its busy hours' peak (a robot's batch to one address moves
    from hour to hour, its size to one address is its own pattern; a loop
    goes far past it)."""
    baseline = learned.get(name) if learned is not None and name is not None else None
    if baseline is None:
        return None
    if rule.per_key:
        return baseline.busiest(ts, BUSY_RANK)
    return baseline.expected(ts, rule.min_history)
