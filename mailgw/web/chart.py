"""The status page's chart as inline SVG geometry: a system's messages per 10
minutes over the last 24 hours, the 10-minute message limit that applies to
it, and when it was suspended. Pure arithmetic; the template draws it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mailgw.anomaly.tally import HISTORY_STEP

WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 48, 24, 10  # room for the axis labels


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[dict[str, object]] = field(default_factory=list)
    limit: dict[str, object] | None = None  # the limit line
    marker: dict[str, object] | None = None  # the suspension
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    total: float = 0.0
    peak: float = 0.0


def _hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.gmtime(ts))


def build(start: float, counts: list[float], limit: float | None,
          suspended_at: float | None) -> Chart:
    """`counts`: messages per HISTORY_STEP from `start`; `limit`: messages
    per 10 minutes that the system may send (None: no such rule)."""
    chart = Chart(total=sum(counts), peak=max(counts, default=0.0))
    top = max(chart.peak, limit or 0.0, 1.0) * 1.1
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    step_w = plot_w / max(len(counts), 1)

    def y(value: float) -> float:
        return round(TOP + plot_h - value / top * plot_h, 1)

    for i, n in enumerate(counts):
        if n:
            chart.bars.append({"x": round(LEFT + i * step_w, 1), "y": y(n),
                               "w": round(max(step_w - 1, 1), 1), "h": round(y(0) - y(n), 1),
                               "label": f"{_hhmm(start + i * HISTORY_STEP)} UTC: {n:g}",
                               "over": limit is not None and n > limit})
    if limit is not None:
        chart.limit = {"y": y(limit), "label": f"limit {limit:g} per 10 min"}
    end = start + len(counts) * HISTORY_STEP
    if suspended_at is not None and start <= suspended_at <= end:
        chart.marker = {"x": round(LEFT + (suspended_at - start) / HISTORY_STEP * step_w, 1),
                        "label": f"suspended {_hhmm(suspended_at)} UTC"}
    for k in range(0, len(counts) - 9, 18):  # every 3 hours, and none crowding "now"
        chart.x_ticks.append((round(LEFT + k * step_w, 1), _hhmm(start + k * HISTORY_STEP)))
    chart.x_ticks.append((WIDTH - 12, "now"))
    for frac in (0.0, 0.5, 1.0):
        chart.y_ticks.append((y(top / 1.1 * frac), f"{top / 1.1 * frac:.0f}"))
    return chart
