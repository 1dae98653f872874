"""Beta reputation with exponential forgetting, in exact integer arithmetic (pure: no Django import).

Evidence is counted in micro-units (1 unit = 1,000,000). A subject's state is (alpha, beta, day): the good
and bad evidence through `day`, decayed as of that day's end. Moving to a later day multiplies each by the
daily forgetting factor once per day (fixed point: x -> (x * FACTOR) >> 16, rounding down), then adds that
day's evidence, capped at CAP. Because every path (a fold of one day, a fold of thirty, a read that decays a
stored state to today, the vectorised benchmark) applies exactly these integer steps in day order, an
incremental recomputation and one from scratch give identical numbers, not merely close ones.

score = (prior_positive + alpha) / (prior_positive + prior_negative + alpha + beta), in micro-units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MICRO = 1_000_000
SHIFT = 16
ONE = 1 << SHIFT
# Evidence totals stay at most 2**42 micro-units (4.4 million units): x * FACTOR and x * MICRO then fit in a
# signed 64-bit integer, so the numpy forms below are exact too.
CAP = 1 << 42
# Beyond this many days every capped total has decayed to zero (a factor <= 0.99999 halves it within ~45,000 days).
MAX_DECAY_DAYS = 100_000


def decay_factor(half_life_days: int) -> int:
    """Return the daily forgetting factor in 16-bit fixed point for a half-life in days (>= 1)."""
    if half_life_days < 1:
        raise ValueError("The half-life is at least one day.")
    return min(round(ONE * 2 ** (-1 / half_life_days)), ONE - 1)


def decay(value: int, factor: int, days: int) -> int:
    """Return `value` after `days` daily decay steps."""
    for _ in range(min(days, MAX_DECAY_DAYS)):
        if value == 0:
            break
        value = (value * factor) >> SHIFT
    return value


@dataclass(frozen=True)
class State:
    alpha: int = 0
    beta: int = 0
    day: int | None = None  # ordinal of the last day folded in; None: no evidence yet


def advance(state: State, *, day: int, positive: int, negative: int, factor: int) -> State:
    """Return `state` moved to `day` (not before its own day) with that day's evidence added."""
    if state.day is not None and day < state.day:
        raise ValueError(f"Evidence of day {day} arrives after day {state.day} was folded.")
    gap = 0 if state.day is None else day - state.day
    alpha = min(decay(state.alpha, factor, gap) + positive, CAP)
    beta = min(decay(state.beta, factor, gap) + negative, CAP)
    return State(alpha, beta, day)


def at_day(state: State, *, day: int, factor: int) -> State:
    """Return `state` decayed to `day` with no new evidence."""
    if state.day is None or day <= state.day:
        return state
    return advance(state, day=day, positive=0, negative=0, factor=factor)


def fold(days: list[tuple[int, int, int]], *, factor: int, state: State = State()) -> State:
    """Fold (day, positive, negative) tuples, in day order, into `state`."""
    for day, positive, negative in sorted(days):
        state = advance(state, day=day, positive=positive, negative=negative, factor=factor)
    return state


def score_micro(alpha: int, beta: int, *, prior_positive: int, prior_negative: int) -> int:
    """Return the score in micro-units (0..1,000,000), rounded down."""
    return (prior_positive + alpha) * MICRO // (prior_positive + prior_negative + alpha + beta)


# --- Vectorised (numpy) forms for many subjects at once: the same integer steps ------------------------


def decay_vector(values, factor: int, days: int = 1):
    """Return a numpy int64 array after `days` daily decay steps (elementwise as `decay`)."""
    for _ in range(days):
        values = (values * factor) >> SHIFT
    return values


def from_scratch_vector(positive, negative, *, factor: int):
    """Fold per-day evidence matrices (days x subjects, int64 micro-units) from zero; return (alpha, beta).

    Equal, element by element, to `fold` over each subject's days (a day without evidence is a decay step
    that adds zero, which is exactly what `advance` does for a gap).
    """
    import numpy as np

    alpha = np.zeros(positive.shape[1], dtype=np.int64)
    beta = np.zeros(positive.shape[1], dtype=np.int64)
    for day in range(positive.shape[0]):
        alpha, beta = advance_vector(alpha, beta, positive[day], negative[day], factor=factor)
    return alpha, beta


def advance_vector(alpha, beta, positive, negative, *, factor: int):
    """Move every subject one day on, adding that day's evidence (elementwise as `advance` with a gap of one)."""
    import numpy as np

    alpha = np.minimum(((alpha * factor) >> SHIFT) + positive, CAP)
    beta = np.minimum(((beta * factor) >> SHIFT) + negative, CAP)
    return alpha, beta


def score_vector(alpha, beta, *, prior_positive: int, prior_negative: int):
    """Return scores in micro-units for arrays of alpha and beta."""
    return (prior_positive + alpha) * MICRO // (prior_positive + prior_negative + alpha + beta)


def effective_half_life(factor: int) -> float:
    """Return the half-life in days the rounded fixed-point factor actually gives."""
    return math.log(0.5) / math.log(factor / ONE)
