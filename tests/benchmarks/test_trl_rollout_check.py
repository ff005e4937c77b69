"""The comparison statistics of benchmarks/trl_rollout_check.py on hand-computed cases."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import trl_rollout_check as C  # noqa: E402


def _counts(correct: list[int], length: int = 0) -> list[dict]:
    return [{"correct": c, "length": length, "truncated": 0, "direct": 0} for c in correct]


def test_homogeneity_statistic_by_hand():
    # n = 8. Prompt 0: 4 vs 4, pooled p = 0.5, z^2 = 0. Prompt 1: 8 vs 0, p = 0.5,
    # z^2 = 64 / (2 * 8 * 0.25) = 16. Prompt 2: 0 vs 0, p = 0: no information, left out.
    res = C.compare(_counts([4, 8, 0], 16), _counts([4, 0, 0], 8), n=8)
    assert res["homogeneity_chi2"] == pytest.approx(16.0)
    assert res["homogeneity_df"] == 2
    assert res["homogeneity_z"] == pytest.approx((16 - 2) / 2)
    assert res["accuracy_diff"] == pytest.approx((0 + 1 + 0) / 3)
    assert res["length_diff"] == pytest.approx((16 - 8) / 8)  # 16 vs 8 tokens over 8 samples
    lo, hi = res["accuracy_diff_ci95"]
    assert 0.0 <= lo <= res["accuracy_diff"] <= hi <= 1.0


def test_identical_paths_have_no_difference():
    a = _counts([3, 5, 1, 7], 20)
    res = C.compare(a, a, n=8)
    assert res["accuracy_diff"] == 0 and res["accuracy_diff_ci95"] == [0.0, 0.0]
    assert res["homogeneity_chi2"] == 0 and res["homogeneity_df"] == 4


def test_describe_per_level():
    d = C.describe(_counts([8, 0, 4], 16), levels=[1, 1, 2], n=8)
    assert d["accuracy"] == pytest.approx(0.5)
    assert d["by_level"] == {"1": 0.5, "2": 0.5}
    assert d["mean_length"] == pytest.approx(2.0)
