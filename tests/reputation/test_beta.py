"""The Beta reputation's integer arithmetic: incremental folds equal folds from scratch, exactly."""

import random

import numpy as np
import pytest

from reputation import beta

FACTOR = beta.decay_factor(30)
PRIOR = (1_000_000, 1_000_000)


def test_the_fixed_point_factor_keeps_the_half_life_within_a_tenth_of_a_day():
    for half_life in (1, 7, 30, 365):
        assert abs(beta.effective_half_life(beta.decay_factor(half_life)) - half_life) < 0.1 * half_life + 0.05


def test_a_subject_without_evidence_scores_the_prior_and_evidence_moves_it_both_ways():
    assert beta.score_micro(0, 0, prior_positive=PRIOR[0], prior_negative=PRIOR[1]) == 500_000
    good = beta.fold([(1, 5_000_000, 0)], factor=FACTOR)
    bad = beta.fold([(1, 0, 5_000_000)], factor=FACTOR)
    assert beta.score_micro(good.alpha, good.beta, prior_positive=PRIOR[0], prior_negative=PRIOR[1]) > 500_000
    assert beta.score_micro(bad.alpha, bad.beta, prior_positive=PRIOR[0], prior_negative=PRIOR[1]) < 500_000


def test_old_evidence_is_forgotten_toward_the_prior():
    bad = beta.fold([(1, 0, 10_000_000)], factor=FACTOR)
    later = beta.at_day(bad, day=1 + 30, factor=FACTOR)
    assert later.beta == pytest.approx(bad.beta / 2, rel=0.01)
    assert beta.at_day(bad, day=100_000, factor=FACTOR).beta == 0


def test_incremental_folds_and_lazy_decay_equal_one_fold_from_scratch_exactly():
    rng = random.Random(7)
    days = sorted(
        {(rng.randrange(1, 200), rng.randrange(0, 3_000_000), rng.randrange(0, 3_000_000)) for _ in range(60)}
    )
    scratch = beta.at_day(beta.fold(days, factor=FACTOR), day=250, factor=FACTOR)
    state = beta.State()
    for day, positive, negative in days:  # one day at a time, with gaps between
        state = beta.advance(state, day=day, positive=positive, negative=negative, factor=FACTOR)
    assert beta.at_day(state, day=250, factor=FACTOR) == scratch


def test_the_numpy_form_equals_the_python_form_for_every_subject():
    rng = np.random.default_rng(3)
    positive = rng.integers(0, 2_000_000, size=(30, 50), dtype=np.int64) * (rng.random((30, 50)) < 0.5)
    negative = rng.integers(0, 2_000_000, size=(30, 50), dtype=np.int64) * (rng.random((30, 50)) < 0.3)
    alpha, beta_ = beta.from_scratch_vector(positive, negative, factor=FACTOR)
    for subject in range(50):
        days = [(d, int(positive[d, subject]), int(negative[d, subject])) for d in range(30)]
        days = [d for d in days if d[1] or d[2]]
        state = beta.at_day(beta.fold(days, factor=FACTOR), day=29, factor=FACTOR) if days else beta.State(0, 0, 29)
        assert (int(alpha[subject]), int(beta_[subject])) == (state.alpha, state.beta)


def test_evidence_cannot_be_folded_into_a_day_already_folded():
    state = beta.fold([(5, 1, 0)], factor=FACTOR)
    with pytest.raises(ValueError, match="after day 5"):
        beta.advance(state, day=4, positive=1, negative=0, factor=FACTOR)


def test_totals_are_capped_so_64_bit_arithmetic_stays_exact():
    state = beta.State()
    for day in range(10):
        state = beta.advance(state, day=day, positive=beta.CAP, negative=0, factor=FACTOR)
    assert state.alpha == beta.CAP
    assert (beta.CAP + PRIOR[0]) * beta.MICRO < 2**63
