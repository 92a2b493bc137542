"""How surprising a count is: the weight of evidence a rule acts on.

A count `x` seen where `expected` was to be expected (messages in ten
minutes against the system's usual for that hour, bounces against its
usual share of its delivery attempts) is scored by its surprise, in nats:
the exponent of the Chernoff bound on the chance of seeing `x` or more by
luck alone, when counts come as a Poisson process of that rate,

    P(X >= x) <= exp(-(x ln(x/expected) - x + expected))      (x > expected)

A rule acts at `ln(1/p)` nats for a chance `p` (6.9 for one in a thousand,
16.1 for one in ten million). The bound is never below the true chance (for
counts of the size rules act on it is 3-10 times above it), and the Poisson
spread is wider than a binomial share's: both err toward not acting. Real
traffic is burstier still (one message to a dead list bounces twenty times
at once); rules allow for that with a factor on the usual rate and a floor,
never with the chance alone.
"""

from __future__ import annotations

import math


def surprise(x: float, expected: float) -> float:
    """Nats of evidence that `x` is more than a rate of `expected` gives."""
    if x <= expected:
        return 0.0
    if expected <= 0.0:
        return math.inf
    return x * math.log(x / expected) - x + expected


def nats(chance: float) -> float:
    """The surprise of a chance: how many nats a rule needs to act at it."""
    return -math.log(chance)


def chance(nats_: float) -> float:
    """The chance bound that a surprise stands for, for people to read."""
    return math.exp(-nats_)
