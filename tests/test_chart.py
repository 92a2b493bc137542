"""The status page's chart geometry: each tick drawn where its value is
(counts against the bars' heights, times against the bars' times), the
suspension's label inside the chart at either edge."""

from __future__ import annotations

import pytest

from mailgw.anomaly.tally import HISTORY_STEP, HISTORY_STEPS
from mailgw.web import chart

START = 1_764_540_000.0  # 2025-11-30 22:00 UTC: a whole 10 minutes
THREE_AM = START + 5 * 3600  # 03:00 UTC, a 3-hourly tick
# the longest marker label of the three languages, at 11px: under 7px a character
LABEL_WIDTH = len("приостановлена в 10:42 UTC") * 7


def counts(**at: float) -> list[float]:
    """144 ten-minute counts, 0 but for `at` ("i<step>": count)."""
    out = [0.0] * HISTORY_STEPS
    for key, n in at.items():
        out[int(key[1:])] = n
    return out


@pytest.mark.parametrize("peak,limit,expected", [
    (4, 3, ["0", "1", "2", "3", "4"]),
    (1, None, ["0", "1"]),  # once "0", "0", "1": the middle tick stood at 0.5
    (3, None, ["0", "1", "2", "3"]),  # once "0", "2", "3": 2 stood at 1.5
    (30, 1000, ["0", "500", "1000"]),
    (730, 300, ["0", "200", "400", "600", "800"]),
])
def test_count_ticks_stand_where_their_values_are(peak, limit, expected):
    drawn = chart.build(START, counts(i100=peak), limit, None)
    assert [label for _, label in drawn.y_ticks] == expected
    (bar,) = drawn.bars
    zero = drawn.y_ticks[0][0]
    assert zero == drawn.bottom == bar["y"] + bar["h"]
    # a tick's height over 0 is its share of the tallest thing drawn: the bar or the limit
    value, height = (peak, bar["h"]) if limit is None or peak > limit else (
        limit, zero - drawn.limit["y"])
    for y, label in drawn.y_ticks:
        assert zero - y == pytest.approx(float(label) / value * height, abs=0.15)
    assert all(top >= drawn.top for top, _ in drawn.y_ticks)  # none above the plot


def test_time_ticks_are_whole_hours_over_the_bars_of_that_time():
    step = int((THREE_AM - START) // HISTORY_STEP)
    drawn = chart.build(START, counts(**{f"i{step}": 5}), None, None)
    assert [label for _, label in drawn.x_ticks] == [
        "00:00", "03:00", "06:00", "09:00", "12:00", "15:00", "18:00"]
    (bar,) = drawn.bars
    assert bar["label"] == "03:00 UTC: 5"
    assert dict((label, x) for x, label in drawn.x_ticks)["03:00"] == bar["x"]


@pytest.mark.parametrize("when", [START + 5, START + HISTORY_STEPS * HISTORY_STEP - 5],
                         ids=["first-minutes", "last-minutes"])
def test_the_suspension_label_stays_inside_the_chart(when):
    drawn = chart.build(START, counts(i0=1, i143=1), 3, when)
    assert drawn.marker is not None
    x, anchor = drawn.marker["label_x"], drawn.marker["anchor"]
    assert isinstance(x, float)
    left, right = (x - LABEL_WIDTH, x) if anchor == "end" else (x, x + LABEL_WIDTH)
    assert left >= 0 and right <= drawn.width
    assert drawn.left <= drawn.marker["x"] <= drawn.width  # the line on the plot
