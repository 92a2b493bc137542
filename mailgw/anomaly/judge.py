"""The judge: each system's traffic counted as it happens, the rules judged on
it, and what crosses one handed on as a decision.

It owns the engines and their windows: in process always, and, with
`shared` (Redis), across every gateway too, judged on the shared counts
when they come back and on the in-process ones while Redis is away. Two
engines at most: the systems' (rules of scope "system") and, when a rule
has scope "sender", the senders', whose decisions name the sender. It
listens to the event bus like any other record keeper; suspensions tell
it in so many words what was decided elsewhere (`suspended`, `lifted`,
`restricted`, `unrestricted`). Nothing else touches the engines; the
status page reads through the views at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.rules import Decision, Rule
from mailgw.anomaly.tally import HISTORY_STEP, HISTORY_STEPS, Counts, SharedWindows, Tally
from mailgw.config import Anomaly, System, tuned
from mailgw.events import Event
from mailgw.senders import Attribution, split, subject


def engines(anomaly: Anomaly, systems: Sequence[System], *, history: bool = True,
            attribution: Attribution | None = None) -> tuple[Engine, Engine | None]:
    """The configured rules' engines: the system's, and the senders' if a
    rule has scope "sender" (its senders attributed by `attribution`, by
    default the systems' own policies). The senders' also counts what each
    system rule that suspends (for any system, by its own figures) reads
    over its window, so that a suspension one sender makes restricts that
    sender (Judge._whose); a rule a reload makes suspend counts so from
    the next start."""
    rules = [Rule.from_config(r) for r in anomaly.rules]
    overrides = tunings(anomaly, systems)
    of_systems = [r for r in rules if r.scope == "system"]
    of_senders = [r for r in rules if r.scope == "sender"]
    if not of_senders:
        return Engine(of_systems, overrides, history), None
    stopping = [r for r in (*of_systems, *(t for mine in overrides.values()
                                           for t in mine.values() if t.scope == "system"))
                if r.stops]
    shares = {(m, r.window) for r in stopping for m in (r.metric, r.per) if m}
    engine = Engine(of_systems, overrides, history)
    return engine, Engine(of_senders, overrides, history=False,
                          senders=attribution or Attribution.of(systems),
                          max_senders=anomaly.senders.max_per_system, counted=shares,
                          remembers=engine)


def tunings(anomaly: Anomaly, systems: Sequence[System]) -> dict[str, dict[str, Rule]]:
    """Each system's rules with figures of its own (`systems.anomaly`), by
    system and rule name; names `anomaly` lacks are left out."""
    rules = {r.name: r for r in anomaly.rules}
    return {s.id: {name: Rule.from_config(tuned(rules[name], tuning))
                   for name, tuning in s.anomaly.items() if name in rules}
            for s in systems if s.anomaly}


# the log's record of what was decided, which replay follows (`Judge.decided`)
DECIDED = frozenset({"suspended", "lifted", "restricted", "unrestricted"})


def _add(to: dict[tuple[str, float], float], counts: Mapping[tuple[str, float], float]) -> None:
    for window, value in counts.items():
        to[window] = to.get(window, 0.0) + value


class Judge:
    def __init__(self, engine: Engine, *, suspend: Callable[[Decision], None],
                 watch: Callable[[Decision], None], shared: SharedWindows | None = None,
                 senders: Engine | None = None, shared_senders: SharedWindows | None = None):
        """`suspend(decision)`, `watch(decision)`: a rule was crossed, with
        strong or weak evidence (on the event loop); a decision that names a
        sender restricts that sender. `senders`, `shared_senders`: the engine
        of senders and its shared windows."""
        self.engine, self.shared = engine, shared
        self.senders, self.shared_senders = senders, shared_senders
        self.suspend, self.watch = suspend, watch
        self._of_systems = self._judger(engine)
        self._of_senders = self._judger(senders) if senders is not None else None
        self._engines = [engine] if senders is None else [engine, senders]
        # system -> (when, windows): what a sender whose restriction was
        # lifted had counted at its last message; `_whose`
        self._absolved: dict[str, list[tuple[float, dict[tuple[str, float], float]]]] = {}
        # a sender's key -> when its grace ends (`spare`)
        self._spared: dict[str, float] = {}

    def observe(self, event: Event) -> None:
        """A subscriber of the event bus: count the event if it is a system's
        traffic, and judge the rules it may cross. A sender's first: the
        traffic of a sender restricted (by this event, or before) is
        contained, not its system's any more, so a trouble that one mailbox
        makes does not also stop the agency. A spared sender's traffic is
        not counted at all."""
        known: dict[Any, Any] = {}  # what both tallies make of the event, made once
        if self.senders is not None:
            assert self._of_senders is not None  # made with `senders`
            tally = self.senders.tally(event, known)
            if tally is not None:
                if self._spared and self._spares(tally.system, tally.ts):
                    return
                self._count(self.senders, self.shared_senders, tally, self._of_senders)
                if tally.system in self.senders.suspended:
                    return
        tally = self.engine.tally(event, known)
        if tally is not None:
            self._count(self.engine, self.shared, tally, self._of_systems)

    @staticmethod
    def _count(engine: Engine, shared: SharedWindows | None, tally: Tally,
               judge: Callable[[Tally, Counts], None]) -> None:
        counts = engine.local.count(tally)
        if shared is None:
            judge(tally, counts)
        else:
            shared.submit(tally, counts, judge)

    def decided(self, event: Event) -> None:
        """A decision recorded in an event log (`mailgw replay`) takes
        effect as it comes, as one made live does."""
        system, sender = event["system"], event.get("sender")
        kind, once = event["event"], str(event["ts"])
        if kind == "suspended":
            self.suspended(system)
        elif kind == "lifted":
            self.lifted(system, once)
        elif kind == "restricted" and sender is not None:
            self.restricted(system, sender)
        elif kind == "unrestricted" and sender is not None:
            self.unrestricted(system, sender, once, event.get("grace_until"))

    def _judger(self, engine: Engine) -> Callable[[Tally, Counts], None]:
        def judge(tally: Tally, counts: Counts) -> None:
            for decision in engine.judge(tally, counts):
                if decision.action == "watch":
                    self.watch(decision)
                    continue
                whose = decision if engine is not self.engine else self._whose(decision)
                if whose is None:
                    continue
                if whose.sender is not None:
                    self.engine.beware(whose.system, True)
                self.suspend(whose)
        return judge

    def _whose(self, d: Decision) -> Decision | None:
        """A system's suspension, unless one sender's traffic makes it. The
        rule is judged again on the system's counts in process without its
        restricted senders': crossed only by them, there is nothing to
        decide; crossed without them, the trouble did not stay with the
        senders contained, and the system is suspended. With none
        restricted, the sender with the most of the rule's metric, if it
        has at least half of it and the rule is not crossed without it, is
        restricted and the agency's other senders go on; trouble spread
        over several senders suspends the system."""
        senders, rule = self.senders, self.rule(d.rule)
        if senders is None or rule is None:
            return d
        window = senders.window_of(rule.metric, rule.window)
        if window is None:
            return d
        keys = senders.local.keys_of(d.system)
        less: dict[tuple[str, float], float] = {}
        for key in keys:
            if key in senders.suspended:
                _add(less, senders.now(key, d.ts))
        # a lifted restriction: the sender's traffic before it was judged
        # and is not its system's to answer for while the system's windows
        # still hold it (its own windows start afresh at the lift)
        for since, counts in self._held_against(d.system, d.ts):
            _add(less, {w: v for w, v in counts.items() if d.ts - since < w[1]})
        if less and not self.engine.crossed_without(d.system, d.ts, d.rule, less):
            self.engine.relent(d.system)
            return None
        if d.system in self.engine.wary:
            return d  # crossed with a sender contained: the trouble is not one mailbox's
        top = max((k for k in keys if k not in senders.suspended), default=None,
                  key=lambda k: senders.local.read(k, window, d.ts))
        if top is None:
            return d
        mine = senders.local.read(top, window, d.ts)
        total = self.engine.now(d.system, d.ts).get((rule.metric, rule.window), 0.0)
        _add(less, senders.now(top, d.ts))
        if 2 * mine < total - less.get((rule.metric, rule.window), 0.0) + mine or \
                self.engine.crossed_without(d.system, d.ts, d.rule, less):
            return d
        self.engine.relent(d.system)
        senders.suspend(top)
        return replace(d, sender=split(top)[1], first_seen=senders.newcomers.get(top))

    async def settled(self, system: str) -> None:
        """Return once the system's events so far are judged (its senders'
        too): with shared counts that is a round trip away, and a
        transaction must not slip in between the event that crosses a rule
        and the suspension."""
        await asyncio.gather(*(shared.settled(system)
                               for shared in (self.shared, self.shared_senders)
                               if shared is not None))

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
        """One sender of the system restricted: no decision on it until
        lifted, and (senders judged) its system is suspect meanwhile
        (Engine.beware)."""
        if self.senders is not None:
            self._spared.pop(subject(system, sender), None)  # restricted again: no grace
            self.senders.suspend(subject(system, sender))
            self.engine.beware(system, True)

    def _held_against(self, system: str, ts: float
                      ) -> list[tuple[float, dict[tuple[str, float], float]]]:
        """The lifted senders' counts `system`'s windows may still hold at
        `ts`; those past every window are forgotten."""
        held = [(since, counts) for since, counts in self._absolved.pop(system, ())
                if any(ts - since < seconds for _, seconds in counts)]
        if held:
            self._absolved[system] = held
        return held

    def unrestricted(self, system: str, sender: str, once: str,
                     grace_until: float | None = None) -> None:
        """That sender's restriction lifted: it is judged afresh, as `lifted`,
        and what it had sent is not held against its system either (`_whose`);
        its system is no longer suspect once none of its senders is restricted.
        With a grace, it is spared until then (`spare`)."""
        if self.senders is not None:
            key = subject(system, sender)
            last = self.senders.local.last_counted(system, key)
            if last is not None:
                self._absolved[system] = [*self._held_against(system, last),
                                          (last, self.senders.now(key, last))]
            self.senders.lift(key)
            if self.shared_senders is not None:
                self.shared_senders.reset(key, once)
            self.engine.beware(system, any(
                k.startswith(f"{system} ") for k in self.senders.suspended))
            if grace_until is not None:
                self.spare(system, sender, grace_until)

    def spare(self, system: str, sender: str, until: float) -> None:
        """An operator vouched for that sender until `until` (a lift with a
        grace): its traffic is neither judged nor counted, in its windows or
        its system's, so that the rest of a press release, or its own
        server's retries of the mail its restriction deferred, do not
        restrict it again. Its windows start afresh when the grace ends."""
        if self.senders is not None:
            self._spared[subject(system, sender)] = until

    def _spares(self, key: str, ts: float) -> bool:
        """Whether the sender `key` is spared at `ts`; a grace past is forgotten."""
        until = self._spared.get(key)
        if until is None:
            return False
        if ts < until:
            return True
        del self._spared[key]
        return False

    def set_overrides(self, overrides: dict[str, dict[str, Rule]]) -> None:
        """Per-system figures (`tunings`, at a config reload); they hold
        for the system's senders too."""
        for engine in self._engines:
            engine.overrides = overrides

    def baselines(self) -> dict[str, dict[str, Any]]:
        return self.engine.baselines()

    def restore_baselines(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        self.engine.restore_baselines(data)

    # --- views, for the suspension record and the status page -----------------

    def rule(self, name: str) -> Rule | None:
        """The rule of that name, as configured (None: no such rule now)."""
        return next((r for engine in self._engines for r in engine.rules
                     if r.name == name), None)

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
        for rule in (mine.get(r.name, r) for r in self.engine.rules):
            threshold = rule.threshold
            current = windows.get((rule.metric, rule.window), 0.0)
            limit: float | None = threshold
            if rule.kind == "ratio":
                per = windows.get((rule.per, rule.window), 0.0) if rule.per else 0.0
                current = round(current / per, 4) if per else 0.0
            elif rule.kind == "spike":
                usual = self.engine.usual(system, rule, ts)
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
