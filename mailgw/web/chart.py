"""The status page's chart as inline SVG geometry: a system's messages per 10
minutes over the last 24 hours, the 10-minute message limit that applies to
it, and when it was suspended. Pure arithmetic; the template draws it and
words its labels.

Every tick is drawn where its value is: counts at whole, evenly spaced
values (1, 2 or 5 times a power of ten apart), times at whole UTC hours.
The suspension's label stands above the plot, on the side of its line that
has room, so it is never cut off at the edge.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from mailgw.anomaly.tally import HISTORY_STEP

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, BOTTOM, TOP = 48, 4, 24, 24  # the axis labels; above the plot, the marker's
HOUR_TICKS = 3 * 3600  # a time tick every 3 hours
MAX_COUNT_TICKS = 5


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM  # the y of a count of 0
    bars: list[dict[str, object]] = field(default_factory=list)
    limit: dict[str, float] | None = None  # the limit line: y, value
    marker: dict[str, object] | None = None  # the suspension: x, label_x, anchor, time
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # x, "HH:MM"
    y_ticks: list[tuple[float, str]] = field(default_factory=list)  # y, the count
    total: float = 0.0
    peak: float = 0.0


def _hhmm(ts: float) -> str:
    return time.strftime("%H:%M", time.gmtime(ts))


def _step(top: float) -> float:
    """The spacing of count ticks: 1, 2 or 5 times a power of ten, the
    smallest that puts at most MAX_COUNT_TICKS ticks above 0 under `top`."""
    power = 10 ** max(0, math.floor(math.log10(top / MAX_COUNT_TICKS))) if top > 1 else 1
    return next(power * k for k in (1, 2, 5, 10) if top / (power * k) <= MAX_COUNT_TICKS)


def build(start: float, counts: list[float], limit: float | None,
          suspended_at: float | None) -> Chart:
    """`counts`: messages per HISTORY_STEP from `start`; `limit`: messages
    per 10 minutes that the system may send (None: no such rule)."""
    chart = Chart(total=sum(counts), peak=max(counts, default=0.0))
    top = max(chart.peak, limit or 0.0, 1.0) * 1.1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, chart.bottom - TOP
    step_w = plot_w / max(len(counts), 1)

    def x(ts: float) -> float:
        return round(LEFT + (ts - start) / HISTORY_STEP * step_w, 1)

    def y(value: float) -> float:
        return round(chart.bottom - value / top * plot_h, 1)

    for i, n in enumerate(counts):
        if n:
            at = start + i * HISTORY_STEP
            chart.bars.append({"x": x(at), "y": y(n), "w": round(max(step_w - 1, 1), 1),
                               "h": round(y(0) - y(n), 1), "label": f"{_hhmm(at)} UTC: {n:g}",
                               "over": limit is not None and n > limit})
    if limit is not None:
        chart.limit = {"y": y(limit), "value": limit}
    end = start + len(counts) * HISTORY_STEP
    if suspended_at is not None and start <= suspended_at <= end:
        at = x(suspended_at)
        right_half = at > LEFT + plot_w / 2
        chart.marker = {"x": at, "label_x": at - 4 if right_half else at + 4,
                        "anchor": "end" if right_half else "start", "time": _hhmm(suspended_at)}
    # whole hours, none so near either end that its label would be cut or
    # crowd "now" at the right edge
    hour = math.ceil(start / HOUR_TICKS) * HOUR_TICKS
    while hour < end - 1.5 * 3600:
        if x(hour) >= LEFT + 16:
            chart.x_ticks.append((x(hour), _hhmm(hour)))
        hour += HOUR_TICKS
    step = _step(top)
    value = 0.0
    while value <= top:
        chart.y_ticks.append((y(value), f"{value:.0f}"))
        value += step
    return chart
