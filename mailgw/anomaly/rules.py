"""Anomaly rules: what a system may do per window before it is suspended.

Three kinds, each named and tunable per system:
- ceiling: a metric over a window above `threshold` (messages, recipients,
  bytes, remote permanent failures, deferrals, gateway rejections, distinct
  recipient domains, messages to the busiest single recipient);
- ratio: one metric divided by another above `threshold`, judged only once
  the divisor reaches `min_sample` (a bounce storm: permanent failures per
  delivery attempt, as SES and cPanel judge senders);
- spike: a count over the last hour above `threshold` times the system's own
  usual count for that hour of the week, and above the floor `min_sample`;
  silent until the system has `min_history` of history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mailgw.config import AnomalyRule


@dataclass(frozen=True)
class Rule:
    name: str
    kind: Literal["ceiling", "ratio", "spike"]
    metric: str  # a name in metrics.METRICS
    window: float  # seconds
    threshold: float
    per: str | None = None  # the divisor of a ratio rule
    min_sample: float = 0.0  # ratio: least divisor; spike: least count
    min_history: float = 0.0  # spike: seconds of history before it judges

    @classmethod
    def from_config(cls, r: AnomalyRule) -> Rule:
        return cls(r.name, r.kind, r.metric, r.window, r.threshold, r.per, r.min_sample,
                   r.min_history)

    def judge(self, value: float, other: float | None, threshold: float) -> float | None:
        """The observed value when this rule is crossed at `threshold` (the
        rule's own, or a system's override), else None. `other` is a ratio's
        divisor, or a spike's baseline (None: not learned yet)."""
        if self.kind == "ceiling":
            return value if value > threshold else None
        if self.kind == "spike":
            if other is None:
                return None
            return value if value > max(self.min_sample, threshold * other) else None
        if other is None or other < max(self.min_sample, 1):
            return None
        ratio = value / other
        return round(ratio, 4) if ratio >= threshold else None


@dataclass(frozen=True)
class Decision:
    ts: float
    system: str
    rule: str
    observed: float
    threshold: float
    window: float
    evidence: dict[str, float] = field(default_factory=dict, compare=False)  # windows read
    action: str = "suspend"

    def as_dict(self) -> dict[str, object]:
        return {"ts": self.ts, "system": self.system, "action": self.action, "rule": self.rule,
                "observed": self.observed, "threshold": self.threshold, "window": self.window}
