"""Tests of e3rl.metrics: exact checks against brute force and hand-computed values."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e3rl.metrics import (
    default_ks,
    distinct_answers,
    group_outcome_fractions,
    mean_at_n,
    normalize_answer,
    pass_at_k,
    pass_at_k_curve,
    summarize_by,
)


def enumerated_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all size-k subsets of n samples (c correct) that contain a correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration_of_subsets(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(enumerated_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_known_values() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 8, 3) == 1.0  # n - c = 2 < k: every subset has a correct sample
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize(("c", "k"), [(0, 1), (1, 1), (1, 256), (3, 16), (50, 100), (500, 7)])
def test_pass_at_k_is_stable_at_large_n(c: int, k: int) -> None:
    n = 512
    value = pass_at_k(n, c, k)
    assert math.isfinite(value)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-9, abs=1e-12)


@given(
    st.integers(1, 600).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_pass_at_k_matches_exact_fraction(args: tuple[int, int, int]) -> None:
    n, c, k = args
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(float(exact_pass_at_k(n, c, k)), rel=1e-9, abs=1e-12)


def test_pass_at_k_is_monotone_in_k_and_c() -> None:
    n = 64
    for c in range(n + 1):
        values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
        assert all(a <= b + 1e-15 for a, b in itertools.pairwise(values))
    for k in (1, 4, 32):
        values = [pass_at_k(n, c, k) for c in range(n + 1)]
        assert all(a <= b + 1e-15 for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(
    ("n", "c", "k", "fragment"),
    [
        (4, 1, 5, "k must not exceed"),
        (4, 1, 0, "k must be >= 1"),
        (4, -1, 1, "0 <= c <= n"),
        (4, 5, 1, "0 <= c <= n"),
    ],
)
def test_pass_at_k_errors_name_the_arguments(n: int, c: int, k: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as err:
        pass_at_k(n, c, k)
    assert f"n={n}, c={c}, k={k}" in str(err.value)


def test_pass_at_k_rejects_non_integers() -> None:
    with pytest.raises(TypeError):
        pass_at_k(4.0, 1, 1)  # type: ignore[arg-type]
    assert pass_at_k(np.int64(10), np.int64(3), np.int64(1)) == pytest.approx(0.3)


def test_pass_at_k_curve_averages_over_prompts() -> None:
    counts = [(10, 3), (10, 0), (12, 12)]
    curve = pass_at_k_curve(counts, [4, 1, 2])
    assert list(curve) == [1, 2, 4]
    assert curve[1] == pytest.approx((0.3 + 0.0 + 1.0) / 3)
    assert curve[4] == pytest.approx((pass_at_k(10, 3, 4) + 0.0 + 1.0) / 3)


def test_pass_at_k_curve_refuses_k_above_smallest_n() -> None:
    with pytest.raises(ValueError, match="min n=8"):
        pass_at_k_curve([(16, 3), (8, 1)], [1, 16])
    with pytest.raises(ValueError, match="empty"):
        pass_at_k_curve([], [1])


def test_default_ks() -> None:
    assert default_ks(1) == [1]
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(12) == [1, 2, 4, 8, 12]


def test_mean_at_n_weights_prompts_equally() -> None:
    assert mean_at_n([[1, 0], [1, 1, 1, 1]]) == pytest.approx(0.75)
    assert mean_at_n([np.array([0.5, 0.5])]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mean_at_n([])
    with pytest.raises(ValueError, match="prompt 1"):
        mean_at_n([[1.0], []])


def test_normalize_answer() -> None:
    assert normalize_answer(None) is None
    assert normalize_answer("  ") is None
    assert normalize_answer("2") == normalize_answer("2.0") == normalize_answer("$4/2$") == "2"
    assert normalize_answer("\\boxed{1/2}") == normalize_answer("0.5")
    assert normalize_answer("X = 3.") == normalize_answer("x=3")
    assert normalize_answer("1/0") == "1/0"


def test_distinct_answers() -> None:
    answers = [
        ["2", "2.0", " 2 ", None],  # one distinct answer
        ["1", "2", "3", "3"],  # three
        [None, None],  # none extracted: zero
    ]
    assert distinct_answers(answers) == pytest.approx((1 + 3 + 0) / 3)
    with pytest.raises(ValueError):
        distinct_answers([])


def test_group_outcome_fractions_on_ragged_groups() -> None:
    # group a: 3 rollouts all correct; b: 1 wrong; c: 5 mixed; d: 2 wrong; e: 1 correct
    rewards = [1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 1]
    groups = ["a", "a", "a", "b", "c", "c", "c", "c", "c", "d", "d", "e"]
    fractions = group_outcome_fractions(rewards, groups)
    assert fractions == pytest.approx(
        {
            "frac_all_correct": 2 / 5,
            "frac_all_wrong": 2 / 5,
            "frac_mixed": 1 / 5,
            # by rollouts: a+e = 4 of 12 all correct, b+d = 3 all wrong, c = 5 mixed
            "frac_rollouts_all_correct": 4 / 12,
            "frac_rollouts_all_wrong": 3 / 12,
            "frac_rollouts_mixed": 5 / 12,
        }
    )


def test_group_outcome_fractions_threshold_and_interleaving() -> None:
    # ids need not be contiguous; a reward of 0.9 is wrong at threshold 1 and right at 0.5
    rewards = np.array([0.9, 1.0, 0.9, 0.0])
    groups = np.array([7, 3, 7, 3])
    by_group = group_outcome_fractions(rewards, groups)
    assert {k: by_group[k] for k in ("frac_all_correct", "frac_all_wrong", "frac_mixed")} == (
        pytest.approx({"frac_all_correct": 0.0, "frac_all_wrong": 0.5, "frac_mixed": 0.5})
    )
    lenient = group_outcome_fractions(rewards, groups, success_threshold=0.5)
    assert {k: lenient[k] for k in ("frac_all_correct", "frac_all_wrong", "frac_mixed")} == (
        pytest.approx({"frac_all_correct": 0.5, "frac_all_wrong": 0.0, "frac_mixed": 0.5})
    )


def test_group_outcome_fractions_accepts_tensors() -> None:
    torch = pytest.importorskip("torch")
    fractions = group_outcome_fractions(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))
    assert fractions["frac_mixed"] == pytest.approx(0.5)
    assert fractions["frac_all_correct"] == pytest.approx(0.5)


def test_group_outcome_fractions_errors() -> None:
    with pytest.raises(ValueError, match="2 rewards but 3 group ids"):
        group_outcome_fractions([1, 0], [0, 0, 1])
    with pytest.raises(ValueError):
        group_outcome_fractions([], [])


def test_summarize_by() -> None:
    items = [
        {"level": 2, "correct": True, "length": 10, "source": "a"},
        {"level": 10, "correct": False, "length": 30},
        {"level": 2, "correct": False, "length": 20, "note": None},
        {"correct": True, "length": 5},
        {"level": 10, "correct": True, "length": float("nan")},
    ]
    summary = summarize_by(items, "level")
    assert list(summary) == [2, 10, None]  # numeric order, missing key last
    assert summary[2] == pytest.approx({"correct": 0.5, "length": 15.0, "count": 2})
    assert summary[10] == pytest.approx({"correct": 0.5, "length": 30.0, "count": 2})
    assert summary[None] == pytest.approx({"correct": 1.0, "length": 5.0, "count": 1})
    assert summarize_by([], "level") == {}
