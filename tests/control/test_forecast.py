"""TransitionForecast and p_mixed against hand-computed values and the allocation module."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3rl.control.allocation import FIT_MIN_PROMPTS, expected_mixed, fit_beta_prior, p_mixed
from e3rl.control.forecast import TransitionForecast, beta_of_outcomes


def test_p_mixed_by_hand():
    # Beta(1, 1), group of 2: 1 - E[p^2] - E[(1-p)^2] = 1 - 1/3 - 1/3
    assert p_mixed([1.0], [1.0], [2])[0] == pytest.approx(1 / 3)
    # groups of 0 and 1 are never mixed
    assert p_mixed([2.0, 2.0], [3.0, 3.0], [0, 1]).tolist() == [0.0, 0.0]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.05, 20), st.floats(0.05, 20), st.integers(0, 16)),
        min_size=1,
        max_size=12,
    )
)
def test_p_mixed_matches_the_gamma_closed_form(rows):
    """p_mixed (the running sum of the allocator's marginal gains) against the closed form
    ``E[p^n] = B(a + n, b) / B(a, b)``, written with log-Gamma functions."""

    def moment(x: float, y: float, n: int) -> float:
        return math.exp(
            math.lgamma(x + n) + math.lgamma(x + y) - math.lgamma(x) - math.lgamma(x + y + n)
        )

    a, b, n = (np.array(x) for x in zip(*rows, strict=True))
    want = [0.0 if c < 2 else 1 - moment(x, y, c) - moment(y, x, c) for x, y, c in rows]
    assert p_mixed(a, b, n) == pytest.approx(want, abs=1e-9)
    # and the allocator's objective is their sum (zero counts under prior (a, b) is Beta(a, b))
    total = sum(expected_mixed([0.0], [0.0], [c], prior=(x, y)) for x, y, c in rows)
    assert sum(want) == pytest.approx(total, abs=1e-9)


def test_bins_cut_the_smoothed_rate():
    tf = TransitionForecast(bins=4)
    # (s + 1) / (n + 2): 0 of 8 -> 0.1, 4 of 8 -> 0.5, 8 of 8 -> 0.9
    assert [tf.bin_of(0, 8), tf.bin_of(4, 8), tf.bin_of(8, 8)] == [0, 2, 3]


def _outcomes(rng, rate, k, n=8):
    return [(int(rng.binomial(n, rate)), n) for _ in range(k)]


def test_a_seen_prompt_gets_its_bins_fit_and_thin_windows_fall_back():
    tf = TransitionForecast(bins=4)
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(40)]
    first = [0] * 20 + [8] * 20  # first visits: half failed, half solved
    tf.observe(ids, [8] * 40, first)
    fitted = fit_beta_prior(first, [8 - s for s in first])
    a, b = tf.forecast(["p0", "new"])
    # p0's bin has no revisits yet: its last visit under the prior fitted to all last visits
    assert (a[0], b[0]) == pytest.approx((fitted[0], fitted[1] + 8))
    assert (a[1], b[1]) == pytest.approx(fitted)  # unseen: the first visits' fit
    # revisits of the failed half: they have moved to about 0.4
    later = [s for s, _ in _outcomes(rng, 0.4, 20)]
    tf.observe(ids[:20], [8] * 20, later)
    tf.last["q"] = tf.key["q"] = (0, 8)  # last visit in bin 0, where the 20 revisits are
    a, b = tf.forecast(["q"])
    assert (a[0], b[0]) == pytest.approx(fit_beta_prior(later, [8 - s for s in later]))


def test_the_fallback_prior_is_the_given_one_until_enough_prompts_are_known():
    tf = TransitionForecast()
    tf.observe(["a"], [8], [3])
    a, b = tf.forecast(["a"], prior=(2.0, 5.0))
    assert (a[0], b[0]) == (5.0, 10.0)


def test_a_bin_that_never_succeeds_forecasts_almost_never_mixed():
    a, b = beta_of_outcomes([(0, 8)] * FIT_MIN_PROMPTS)
    assert a / (a + b) == pytest.approx(0.5 / (8 * FIT_MIN_PROMPTS + 1))
    assert p_mixed([a], [b], [8])[0] < 0.02  # a flat prior would say 7 in 9
    assert beta_of_outcomes([(0, 8)] * (FIT_MIN_PROMPTS - 1)) is None


def test_skipped_prompts_keep_their_last_visit_and_state_round_trips():
    tf = TransitionForecast(bins=3, window=20)
    tf.observe(["a", "b"], [4, 2], [1, 2])
    tf.observe(["a", "b"], [0, 3], [0, 0])
    assert tf.last == {"a": (1, 4), "b": (0, 3)}
    assert list(tf.revisits) == [(tf.bin_of(2, 2), 0, 3)]
    again = TransitionForecast()
    again.load_state_dict(tf.state_dict())
    assert again.state_dict() == tf.state_dict() and again.window == 20


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="window"):
        TransitionForecast(window=3)


def test_the_window_can_shrink_and_grow_keeping_the_latest_groups():
    tf = TransitionForecast(window=FIT_MIN_PROMPTS)
    tf.observe([f"p{i}" for i in range(20)], [2] * 20, list(range(2)) * 10)
    assert len(tf.first_visits) == FIT_MIN_PROMPTS
    assert list(tf.first_visits)[-1] == (1, 2)
    tf.set_window(100)
    tf.observe(["x", "y"], [4, 4], [1, 2])
    assert len(tf.first_visits) == FIT_MIN_PROMPTS + 2 and tf.window == 100


def test_keep_bins_by_the_weighted_history_and_the_fallback_still_uses_the_last_visit():
    tf = TransitionForecast(bins=4, keep=0.5)
    tf.observe(["a"], [8], [8])
    tf.observe(["a"], [8], [0])
    assert tf.last["a"] == (0, 8) and tf.key["a"] == (4.0, 12.0)
    # binned by (4 + 1) / (12 + 2) = 0.36 -> bin 1, not by the last visit's 0.1 -> bin 0
    assert tf.bin_of(*tf.key["a"]) == 1 and tf.bin_of(*tf.last["a"]) == 0
    assert list(tf.revisits) == [(3, 0, 8)]  # filed under the first visit's bin (8 of 8)
    a, b = tf.forecast(["a"], prior=(1.0, 1.0))  # thin windows: last visit under the prior
    assert (a[0], b[0]) == (1.0, 9.0)
    again = TransitionForecast()
    again.load_state_dict(tf.state_dict())
    assert again.key == tf.key and again.keep == 0.5
