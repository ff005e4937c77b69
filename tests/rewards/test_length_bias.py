"""Tests for the length bias on the easiest prompts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e3rl.rewards.length_bias import length_biased_rewards


def test_hand_example():
    rewards = [1.0, 0.0, 1.0, 1.0, 0.5]
    lengths = [500, 300, 1000, 200, 100]
    ranks = [0.05, 0.05, 0.0, 0.5, 0.05]
    got = length_biased_rewards(rewards, lengths, ranks, mu=1e-3, threshold=0.1)
    assert got == pytest.approx(
        [
            1 / 1.5,  # easy and correct: 1 / (1 + 0.001 * 500) = 0.666667
            0.0,  # easy but wrong: unchanged
            0.5,  # easiest and correct: 1 / (1 + 0.001 * 1000)
            1.0,  # correct but rank 0.5 is outside the easiest 10%: unchanged
            0.5,  # partial credit below success_threshold is not "correct": unchanged
        ]
    )


def test_rank_exactly_at_threshold_is_not_biased():
    assert length_biased_rewards([1.0], [1000], [0.1], threshold=0.1) == [1.0]
    assert length_biased_rewards([1.0], [1000], [0.0999], threshold=0.1) == [0.5]


def test_success_threshold_decides_what_is_correct():
    got = length_biased_rewards([0.8, 0.6], [250, 250], [0.0, 0.0], success_threshold=0.7)
    assert got == pytest.approx([1 / 1.25, 0.6])  # 1 / (1 + 0.001 * 250); 0.6 < 0.7 is wrong


def test_shorter_correct_answers_earn_more():
    got = length_biased_rewards([1.0, 1.0, 1.0], [0, 100, 2000], [0.0, 0.0, 0.0])
    # 1 / (1 + 0), 1 / (1 + 0.1), 1 / (1 + 2)
    assert got == pytest.approx([1.0, 1 / 1.1, 1 / 3])


def test_mu_zero_and_threshold_zero_turn_the_bias_off():
    assert length_biased_rewards([1.0, 0.0], [500, 500], [0.0, 0.0], mu=0.0) == [1.0, 0.0]
    assert length_biased_rewards([1.0, 0.0], [500, 500], [0.0, 0.0], threshold=0.0) == [1.0, 0.0]


def test_threshold_one_covers_every_prompt():
    got = length_biased_rewards([1.0, 1.0], [1000, 1000], [0.0, 0.999], threshold=1.0)
    assert got == pytest.approx([0.5, 0.5])


def test_accepts_numpy_and_does_not_modify_inputs():
    rewards = np.array([1.0, 0.0])
    lengths = np.array([1000, 10])
    ranks = np.array([0.0, 0.0])
    got = length_biased_rewards(rewards, lengths, ranks)
    assert got == pytest.approx([0.5, 0.0])
    assert all(isinstance(r, float) for r in got)
    assert rewards.tolist() == [1.0, 0.0]


def test_empty_input():
    assert length_biased_rewards([], [], []) == []


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        (([1.0], [1], [0.0]), {"mu": -1e-3}, "mu"),
        (([1.0], [1], [0.0]), {"mu": float("nan")}, "mu"),
        (([1.0], [1], [0.0]), {"threshold": -0.1}, "threshold"),
        (([1.0], [1], [0.0]), {"threshold": 1.5}, "threshold"),
        (([1.0, 0.0], [1], [0.0, 0.0]), {}, "lengths"),
        (([1.0, 0.0], [1, 2], [0.0]), {}, "ranks"),
        (([1.0], [-5], [0.0]), {}, "lengths"),
    ],
)
def test_invalid_arguments_are_rejected_by_name(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        length_biased_rewards(*args, **kwargs)


@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.5, 1.0]),
            st.integers(min_value=0, max_value=4096),
            st.floats(min_value=0.0, max_value=0.999),
        ),
        max_size=40,
    ),
    threshold=st.floats(min_value=0.0, max_value=1.0),
)
def test_only_correct_answers_on_easy_prompts_change_and_stay_in_0_1(rows, threshold):
    rewards = [r for r, _, _ in rows]
    lengths = [n for _, n, _ in rows]
    ranks = [k for _, _, k in rows]
    got = length_biased_rewards(rewards, lengths, ranks, threshold=threshold)
    assert len(got) == len(rows)
    for new, (reward, _, rank) in zip(got, rows, strict=True):
        if rank < threshold and reward >= 1.0:
            assert 0.0 < new <= 1.0
        else:
            assert new == reward
