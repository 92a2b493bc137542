"""Anomaly rules: what a system may do per window before the gateway acts.

Three kinds, each named and tunable per system (`threshold`):
- ceiling: a metric over a window above `threshold`, a hard cap whatever
  the system's history (distinct recipient domains, messages to the
  busiest single recipient, refusals);
- ratio: a metric as a share of another (permanent failures per delivery
  attempt), judged only once the divisor reaches `min_sample` and the
  metric `min_count`. Abnormal is above `threshold` and above `factor`
  times the system's own usual share, learned over the `baseline` window
  (a week), starting from `prior` for a system without history (a rule
  with no `baseline` holds every system, or sender, to `prior`);
- spike: a count over the window above `threshold` times the system's own
  usual count for that hour of the week (learned; silent while it has less
  than `min_history`), plus a floor: `min_sample`, and `floor` times its
  average per window over the `baseline` window, so that a big system's
  batch is not a small one's. A metric counted per key (the top pair's
  count) learns each hour's peak of its window instead of the hour's
  count, and its usual is the busiest hour of its week: a notification
  robot's own peak to one address, whenever its batch comes, where its
  average over the week (the usual until `min_history` has passed)
  understates office-hours traffic.

A rule with chances set (`watch`, `suspend`) weighs evidence: the count
against what the abnormal line would let through, scored by its surprise
(evidence.py); it alerts the operators at the `watch` chance and suspends
the system at the `suspend` chance, so weak evidence watches and strong
evidence stops. A rule without them acts on the bare comparison: a ceiling
suspends (or watches, with `respond = "watch"`) as soon as it is crossed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mailgw.anomaly.evidence import chance, nats, surprise
from mailgw.anomaly.metrics import METRICS
from mailgw.config import AnomalyRule

Action = Literal["suspend", "watch"]


class Reading:
    """What the engine read for one rule on one event. Made for every rule
    judged at every event: a plain class, which the compiled engine builds
    natively, where a frozen dataclass's __init__ runs as Python (a fifth
    of the engine's cost)."""

    __slots__ = ("value", "per", "long_value", "long_per", "usual", "span")

    def __init__(self, value: float, per: float = 0.0, long_value: float = 0.0,
                 long_per: float = 0.0, usual: float | None = None, span: float = 0.0):
        self.value = value  # the metric over the window
        self.per = per  # ratio: the divisor over the window
        self.long_value = long_value  # ratio and spike: the metric over the baseline window
        self.long_per = long_per  # ratio: the divisor over the baseline window
        # spike: the usual count for this hour of the week (per key: the
        # peak of its busiest hour)
        self.usual = usual
        self.span = span  # seconds of the system's history the baseline window holds


@dataclass(frozen=True)
class Verdict:
    action: Action
    observed: float  # what the rule reports: a count, or a share for a ratio
    usual: float | None  # the system's usual, in the same unit
    expected: float  # the most the abnormal line lets through, in the unit of the count
    surprise: float  # nats (0 for a bare comparison)


@dataclass(frozen=True)
class Rule:
    name: str
    kind: Literal["ceiling", "ratio", "spike"]
    metric: str
    window: float  # seconds
    threshold: float
    per: str | None = None  # the divisor of a ratio rule
    min_sample: float = 0.0  # ratio: least divisor; spike: least floor
    min_history: float = 0.0  # spike: seconds of history before its hour-of-week usual
    min_count: float = 0.0  # least count of the metric before the rule may act
    baseline: float | None = None  # seconds over which the system's usual is learned
    factor: float = 0.0  # ratio: times the system's usual share
    prior: float = 0.0  # ratio: the usual share of a system without history
    floor: float = 0.0  # spike: times the system's average count per window
    watch: float | None = None  # the chance at or below which the operators are alerted
    suspend: float | None = None  # the chance at or below which the system is suspended
    respond: Action = "suspend"  # a bare comparison's action
    per_key: bool = False  # spike: its metric is counted per key (no hour-of-week usual)
    scope: Literal["system", "sender"] = "system"  # whose traffic it judges

    @classmethod
    def from_config(cls, r: AnomalyRule) -> Rule:
        return cls(r.name, r.kind, r.metric, r.window, r.threshold, r.per, r.min_sample,
                   r.min_history, r.min_count, r.baseline, r.factor, r.prior, r.floor,
                   r.watch, r.suspend, r.respond, METRICS[r.metric].how != "sum", r.scope)

    @property
    def stops(self) -> bool:
        """Whether it may suspend (else it only watches)."""
        return self.suspend is not None if self.weighs else self.respond == "suspend"

    @property
    def weighs(self) -> bool:
        """Whether it acts on evidence (chances set) rather than a comparison."""
        return self.watch is not None or self.suspend is not None

    def judge(self, reading: Reading, threshold: float) -> Verdict | None:
        """The verdict when this rule is crossed at `threshold` (the rule's
        own, or a system's override), else None."""
        x = reading.value
        if x < self.min_count or x <= 0:
            return None
        if self.kind == "ceiling":
            return Verdict(self.respond, x, None, threshold, 0.0) if x > threshold else None
        if self.kind == "ratio":
            n = reading.per
            if n < max(self.min_sample, 1.0):
                return None
            usual = self._usual_share(reading)
            line = max(threshold, self.factor * usual) if usual is not None else threshold
            if not self.weighs:  # a share of exactly the threshold counts
                return Verdict(self.respond, round(x / n, 4), usual, line * n, 0.0) \
                    if x >= line * n else None
            verdict = self._weigh(x, line * n)
            if verdict is None:
                return None
            return Verdict(verdict[0], round(x / n, 4), usual, line * n, verdict[1])
        usual_count = self._usual_count(reading.usual)
        if usual_count is None:
            return None  # nothing learned to compare with yet: silent
        average = self._average(reading)
        line = threshold * usual_count + max(self.min_sample, self.floor * average)
        verdict = self._weigh(x, line)
        if verdict is None:
            return None
        return Verdict(verdict[0], x, usual_count, line, verdict[1])

    def _weigh(self, x: float, line: float) -> tuple[Action, float] | None:
        if not self.weighs:
            return (self.respond, 0.0) if x > line else None
        s = surprise(x, line)
        if s <= 0.0:
            return None
        if self.suspend is not None and s >= nats(self.suspend):
            return "suspend", s
        if self.watch is not None and s >= nats(self.watch):
            return "watch", s
        return None

    def _usual_share(self, r: Reading) -> float | None:
        """The system's usual share before this window, its history weighed
        against the prior as if the prior were `PRIOR_WEIGHT` attempts;
        without a `baseline` window, the prior itself (None if unset)."""
        if self.baseline is None:
            return self.prior or None
        seen, of = r.long_value - r.value, r.long_per - r.per
        return (seen + PRIOR_WEIGHT * self.prior) / (of + PRIOR_WEIGHT)

    def _usual_count(self, usual: float | None) -> float | None:
        """The learned usual (None until learned), as a count over the
        window: a per-key metric's is its window's peak already; until it
        is learned, a per-key metric's is none (0): the floor, which weighs
        its average over the baseline window, is the whole line."""
        if usual is not None:
            return usual if self.per_key else usual * self.window / 3600
        return 0.0 if self.per_key else None  # per key: the floor alone

    def beneath(self, x: float, per: float, usual: float | None, threshold: float) -> bool:
        """Whether a ratio's or a spike's count `x` (of `per`, with the
        learned `usual`) is under what its line can never be below: no
        verdict, known without reading the baseline window. A busy
        system's top pair and failures are past their least counts at most
        events, and well within their lines."""
        if self.kind == "ratio":
            return x < threshold * per  # the line is the threshold's share or more
        if self.kind == "spike":
            count = self._usual_count(usual)
            return count is None or x <= threshold * count + self.min_sample
        return False

    @property
    def learns(self) -> str | None:
        """Under what name its hour-of-week usual is learned (None: it has
        none): a summed metric's hourly count, shared by every spike rule of
        the metric; a per-key metric's peak, per window."""
        if self.kind != "spike":
            return None
        return f"{self.metric}/{self.window:g}s" if self.per_key else self.metric

    def _average(self, r: Reading) -> float:
        """The metric's average per window over the history the baseline
        window holds (a window not yet full would understate it)."""
        if self.baseline is None:
            return 0.0
        return r.long_value * self.window / max(min(self.baseline, r.span), self.window)


PRIOR_WEIGHT = 200.0  # the prior share counts as this many attempts of the system's own


@dataclass(frozen=True)
class Decision:
    ts: float
    system: str
    rule: str
    observed: float
    threshold: float
    window: float
    evidence: dict[str, float] = field(default_factory=dict, compare=False)  # windows read
    action: Action = "suspend"
    usual: float | None = None  # the system's usual, in the unit of `observed`
    expected: float | None = None  # the abnormal line, as a count
    surprise: float = 0.0  # nats; 0 for a bare comparison
    # a rule of scope "sender": the sender inside the system it judged, whom
    # a "suspend" restricts (the system's other senders go on)
    sender: str | None = None
    # a sender new to its system: when it first sent (None: a sender it knew)
    first_seen: float | None = None

    def as_dict(self) -> dict[str, object]:
        action = "restrict" if self.sender is not None and self.action == "suspend" \
            else self.action
        out: dict[str, object] = {
            "ts": self.ts, "system": self.system, "action": action, "rule": self.rule,
            "observed": self.observed, "threshold": self.threshold, "window": self.window}
        if self.sender is not None:
            out["sender"] = self.sender
        if self.usual is not None:
            out["usual"] = round(self.usual, 4)
        if self.surprise:
            out["expected"] = round(self.expected or 0.0, 2)
            out["chance"] = float(f"{chance(self.surprise):.3g}")
        out["evidence"] = self.evidence
        return out
