"""Rule kinds at their edges, and the evidence they weigh against known values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgw.anomaly.evidence import chance, nats, surprise
from mailgw.anomaly.rules import Reading, Rule

# the exact Poisson tails P(X >= x) for rate l (computed once with scipy.stats.poisson.sf)
KNOWN_TAILS = [(20, 5, 3.452135820914455e-07), (10, 1, 1.1142547833872071e-07),
               (50, 20, 1.2458926079719434e-08), (15, 4.5, 7.36605235963422e-05)]


def poisson_tail(x: int, rate: float) -> float:
    """P(X >= x), summed plainly from x up: the reference for the bound."""
    return sum(math.exp(-rate + k * math.log(rate) - math.lgamma(k + 1))
               for k in range(x, x + 2000))


@pytest.mark.parametrize(("x", "rate", "tail"), KNOWN_TAILS)
def test_the_surprise_bounds_the_known_chance_from_above_within_a_factor_of_twenty(x, rate,
                                                                                 tail):
    bound = chance(surprise(x, rate))
    assert tail <= bound <= 20 * tail
    assert poisson_tail(x, rate) == pytest.approx(tail, rel=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=150), st.floats(min_value=0.1, max_value=100))
def test_the_bound_is_never_below_the_true_chance(x, rate):
    assert chance(surprise(x, rate)) >= poisson_tail(x, rate) * (1 - 1e-9)


def test_no_surprise_at_or_below_what_is_expected_and_all_of_it_where_nothing_was():
    assert surprise(5, 5) == surprise(3, 5) == 0.0
    assert surprise(1, 0) == math.inf
    assert nats(1e-6) == pytest.approx(13.8155, rel=1e-4)


BOUNCES = Rule("bounce_rate", "ratio", "perm_failures", 3600, 0.05, per="attempts",
               min_sample=20, min_count=5, baseline=7 * 86400, factor=3, prior=0.02,
               watch=1e-3, suspend=1e-7)


def bounces(failed: float, attempts: float, week_failed: float = 0, week_attempts: float = 0):
    # the week's counts include the hour's, as the windows read them
    return Reading(failed, attempts, week_failed + failed, week_attempts + attempts)


def test_a_ratio_judged_against_the_systems_usual_share_not_a_flat_one():
    # 3% usual over a week of 5000 attempts: 9% is its abnormal line
    usual = dict(week_failed=150, week_attempts=5000)
    assert BOUNCES.judge(bounces(5, 50, **usual), 0.05) is None  # 10%: chance, not abuse
    weaker = BOUNCES.judge(bounces(30, 100, **usual), 0.05)
    assert weaker is not None and weaker.action == "watch"
    storm = BOUNCES.judge(bounces(40, 100, **usual), 0.05)
    assert storm is not None and storm.action == "suspend" and storm.observed == 0.4
    assert storm.usual == pytest.approx(0.0296, abs=1e-3)
    assert storm.expected == pytest.approx(8.9, abs=0.1)  # 9% of 100 attempts


def test_a_ratio_watches_on_weaker_evidence_and_needs_enough_failures_and_attempts():
    usual = dict(week_failed=10, week_attempts=5000)  # 0.2%: the floor of 5% is the line
    assert BOUNCES.judge(bounces(4, 20, **usual), 0.05) is None  # 4 < min_count
    assert BOUNCES.judge(bounces(6, 19, **usual), 0.05) is None  # 19 < min_sample
    assert BOUNCES.judge(bounces(8, 60, **usual), 0.05) is None  # 13% of 60: luck enough
    weak = BOUNCES.judge(bounces(12, 60, **usual), 0.05)
    assert weak is not None and weak.action == "watch"  # 20% of 60: one in 2000 at most


def test_a_ratio_of_a_system_with_no_history_starts_from_the_prior():
    # no week behind it: the 2% prior, three times that is the line
    verdict = BOUNCES.judge(bounces(20, 60), 0.05)
    assert verdict is not None and verdict.usual == pytest.approx(0.02)
    assert verdict.expected == pytest.approx(3.6)


def test_a_bare_ratio_acts_at_its_threshold_exactly():
    rule = Rule("r", "ratio", "perm_failures", 3600, 0.10, per="attempts", min_sample=50)
    assert rule.judge(Reading(4, 50), 0.10) is None
    verdict = rule.judge(Reading(5, 50), 0.10)
    assert verdict is not None and verdict.action == "suspend" and verdict.surprise == 0.0


SPIKE = Rule("spike_10m", "spike", "messages", 600, 3, min_sample=20, baseline=7 * 86400,
             floor=1, watch=1e-3, suspend=1e-9)


def test_a_spike_is_judged_against_the_hour_and_a_floor_that_grows_with_the_system():
    # usual 60 an hour at this hour of the week: 10 per ten minutes; a week of
    # 7000 messages: 6.9 per ten minutes on average
    def at(x: float) -> Reading:
        return Reading(x, long_value=7000, usual=60, span=7 * 86400)

    line = 3 * 10 + 20  # three times the usual, then the floor (min_sample above the average)
    assert SPIKE.judge(at(line), 3) is None
    assert SPIKE.judge(at(line + 10), 3) is None  # a little over is luck
    watch = SPIKE.judge(at(line + 30), 3)
    assert watch is not None and watch.action == "watch" and watch.expected == line
    suspend = SPIKE.judge(at(line + 80), 3)
    assert suspend is not None and suspend.action == "suspend"
    big = Reading(line + 80, long_value=700_000, usual=60, span=7 * 86400)  # its floor: 694
    assert SPIKE.judge(big, 3) is None


def test_a_spike_is_silent_until_its_hour_of_week_usual_is_learned():
    assert SPIKE.judge(Reading(5000, long_value=5000, span=3600), 3) is None


LOOP = Rule("loop", "spike", "top_pair", 3600, 3, min_sample=20, baseline=7 * 86400, floor=10,
            min_count=20, watch=1e-3, suspend=1e-7, per_key=True)


def first_over(line: float, chance_: float) -> int:
    """The least count whose surprise against `line` reaches `chance_`."""
    x = math.ceil(line)
    while surprise(x, line) < nats(chance_):
        x += 1
    return x


def test_a_per_key_spike_without_a_learned_usual_is_held_to_its_floor():
    # a pair mailed 120 times in the day of history it has: 5 an hour on
    # average; no busy hour learned yet: ten times that average is the line
    line = 10 * 5
    def at(x: float) -> Reading:
        return Reading(x, long_value=120, span=86400)

    watch, suspend = first_over(line, 1e-3), first_over(line, 1e-7)
    assert LOOP.judge(at(line), 3) is None and LOOP.judge(at(line + 1), 3) is None
    assert LOOP.judge(at(watch - 1), 3) is None
    verdict = LOOP.judge(at(watch), 3)
    assert verdict is not None and verdict.action == "watch" and verdict.expected == line
    assert verdict.usual == 0  # nothing learned: the floor alone
    verdict = LOOP.judge(at(suspend - 1), 3)
    assert verdict is not None and verdict.action == "watch"
    verdict = LOOP.judge(at(suspend), 3)
    assert verdict is not None and verdict.action == "suspend"
    # the same 120 spread over a week: the least floor (min_sample) decides
    assert LOOP.judge(Reading(first_over(20, 1e-7), long_value=120, span=7 * 86400),
                      3) is not None
    assert LOOP.judge(Reading(first_over(20, 1e-7) - 1, long_value=120, span=7 * 86400),
                      3).action == "watch"  # type: ignore[union-attr]


def test_a_per_key_spike_is_judged_against_the_busy_hours_peak_it_learned():
    # a robot that mails one address up to 30 times in its busy hours: three
    # times that, plus the floor, is its line; the same count from a pair
    # whose system never mails one address more than twice an hour is a loop
    robot = 3 * 30 + 20
    assert LOOP.judge(Reading(robot, long_value=168, usual=30, span=7 * 86400), 3) is None
    over = first_over(robot, 1e-7)
    verdict = LOOP.judge(Reading(over, long_value=168, usual=30, span=7 * 86400), 3)
    assert verdict is not None and verdict.action == "suspend" and verdict.usual == 30
    assert LOOP.judge(Reading(over - 1, long_value=168, usual=30, span=7 * 86400),
                      3).action == "watch"  # type: ignore[union-attr]
    quiet = 3 * 2 + 20
    verdict = LOOP.judge(Reading(robot, long_value=40, usual=2, span=7 * 86400), 3)
    assert verdict is not None and verdict.action == "suspend" and verdict.expected == quiet
    # a usual learned is a count over the window already: not scaled by it
    three_hours = Rule("loop3", "spike", "top_pair", 3 * 3600, 3, min_sample=20,
                       baseline=7 * 86400, floor=10, min_count=20, watch=1e-3, suspend=1e-7,
                       per_key=True)
    verdict = three_hours.judge(Reading(200, long_value=40, usual=30, span=7 * 86400), 3)
    assert verdict is not None and verdict.expected == 3 * 30 + 20


def test_a_ceiling_acts_above_its_threshold_and_may_only_watch():
    rule = Rule("c", "ceiling", "top_recipient", 600, 100, respond="watch")
    assert rule.judge(Reading(100), 100) is None
    verdict = rule.judge(Reading(101), 100)
    assert verdict is not None and verdict.action == "watch" and verdict.expected == 100


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(["bounces", "spike", "loop", "bare", "bare_loop"]),
       st.integers(0, 300), st.integers(0, 1000), st.integers(0, 5000), st.integers(0, 50000),
       st.one_of(st.none(), st.floats(0, 100)), st.floats(0, 30 * 86400),
       st.sampled_from([0.05, 0.1, 0.3, 1.0, 3.0]))
def test_a_count_beneath_its_rules_line_gets_no_verdict(kind, x, per, long_x, long_per,
                                                        usual, span, threshold):
    """The engine passes over a rule whose count is beneath its line
    (Rule.beneath) without reading the rest: judged in full, it would have
    given no verdict either."""
    rule = {"bounces": BOUNCES,
            "spike": Rule("spike", "spike", "messages", 3600, 3, min_sample=50, floor=1,
                          baseline=7 * 86400, watch=1e-3),
            "loop": Rule("loop", "spike", "top_pair", 3600, 3, min_sample=20, floor=10,
                         min_count=20, baseline=7 * 86400, per_key=True, watch=1e-3,
                         suspend=1e-7),
            "bare": Rule("bare", "ratio", "perm_failures", 3600, 0.1, per="attempts",
                         min_sample=10),
            "bare_loop": Rule("bare_loop", "spike", "top_pair", 3600, 3, min_sample=20,
                              baseline=7 * 86400, per_key=True)}[kind]
    reading = Reading(x, per, long_x + x, long_per + per, usual, span)
    if rule.beneath(x, per, usual, threshold):
        assert rule.judge(reading, threshold) is None
