"""`mailgw replay`: the configured rules run on a recorded event log, with
the clock taken from the events, so that an operator can see what a config
would have done on last month's traffic before deploying it.

Each decision is a JSON line on stdout (DESIGN.md); stderr gets progress
every few seconds on a long file, and at the end a summary per rule and per
system: what would have been suspended or watched, and when.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import TextIO

import orjson  # parses an event about twice as fast as json: replay reads millions

from mailgw.anomaly.engine import Engine
from mailgw.anomaly.judge import DECIDED, Judge
from mailgw.anomaly.rules import Decision
from mailgw.clock import utc_time

PROGRESS_EVERY = 5.0  # seconds between progress lines


class BadLog(Exception):
    """A line of the log is not an event replay can take; the text says which."""


class Replay:
    def __init__(self, engine: Engine, senders: Engine | None, out: TextIO, err: TextIO):
        """`engine`, `senders`: the system's and the senders' (anomaly/judge.py),
        judged in process as a gateway without Redis judges."""
        self.judge = Judge(engine, senders=senders, suspend=self._decided, watch=self._decided)
        self.out, self.err = out, err
        self.events = 0
        self.first: float | None = None
        self.last = float("-inf")
        self.by_rule: Counter[tuple[str, str]] = Counter()  # (rule, action) -> decisions
        self.suspensions: dict[str, list[Decision]] = {}
        self.watches: Counter[str] = Counter()

    def run(self, lines: Iterable[bytes], name: str) -> None:
        """Every event of `lines` through the engine; BadLog on a line that
        is not an event or goes back in time."""
        started = shown = time.monotonic()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
                ts = float(event["ts"])
            except (ValueError, KeyError, TypeError):
                raise BadLog(f"{name}:{number}: not an event (a JSON object with ts)") from None
            if ts < self.last:
                raise BadLog(f"{name}:{number}: ts goes backwards; replay needs the events "
                             f"in time order")
            self.last = ts
            if self.first is None:
                self.first = ts
            self.events += 1
            if event.get("event") in DECIDED and event.get("system") is not None:
                self.judge.decided(event)
            else:
                self.judge.observe(event)
            if not self.events % 65536 and time.monotonic() - shown >= PROGRESS_EVERY:
                shown = time.monotonic()
                self.err.write(f"replay: {self.events:,} events, up to {utc_time(ts)}, "
                               f"{self.events / (shown - started):,.0f} a second\n")
        self.err.write(self.summary(time.monotonic() - started))

    def _decided(self, d: Decision) -> None:
        said = d.as_dict()
        self.out.write(json.dumps(said) + "\n")
        self.by_rule[(d.rule, str(said["action"]))] += 1
        if d.action == "suspend":
            self.suspensions.setdefault(d.system, []).append(d)
        else:
            self.watches[d.system] += 1

    def summary(self, seconds: float) -> str:
        lines = [f"replay: {self.events:,} events from {utc_time(self.first)} to "
                 f"{utc_time(self.last if self.events else None)} in {seconds:.0f} s"]
        rules = sorted({rule for rule, _ in self.by_rule})
        if not rules:
            lines.append("no rule was crossed: nothing would have been suspended or watched")
            return "\n".join(lines) + "\n"
        width = max(len(r) for r in rules)
        lines.append(f"{'rule':<{width}}  suspend  restrict  watch")
        lines += [f"{r:<{width}}  {self.by_rule[(r, 'suspend')]:>7}  "
                  f"{self.by_rule[(r, 'restrict')]:>8}  {self.by_rule[(r, 'watch')]:>5}"
                  for r in rules]
        systems = sorted(set(self.suspensions) | set(self.watches))
        width = max(len(s) for s in systems)
        lines.append(f"{'system':<{width}}  what would have happened")
        for system in systems:
            said = [f"{'suspended' if d.sender is None else 'restricted ' + d.sender} "
                    f"{utc_time(d.ts)} ({d.rule})" for d in self.suspensions.get(system, [])]
            if self.watches[system]:
                said.append(f"{self.watches[system]} watch" +
                            ("es" if self.watches[system] > 1 else ""))
            lines.append(f"{system:<{width}}  {'; '.join(said)}")
        return "\n".join(lines) + "\n"
