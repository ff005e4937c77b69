"""benchmarks/testbed_paired.py on hand-made records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import testbed_paired as TP  # noqa: E402


def _record(
    out: Path,
    arm: str,
    seed: int,
    final: float,
    p64: float,
    drop: float,
    mixed: float = 0.5,
    rollouts: int = 300,
) -> None:
    rec = {
        "arm": arm,
        "seed": seed,
        # four points: the last three average to `final`; AUC over rollouts 0-`rollouts`
        "val_curve": [[0, 0, 0.5], *([k, k * rollouts / 3, final] for k in (1, 2, 3))],
        "pass_at_k": {"64": p64},
        "entropy_t1_head_tail": {"drop": drop},
        "mean_frac_rollouts_mixed": mixed,
        "rollouts": rollouts,
    }
    (out / "runs").mkdir(exist_ok=True)
    (out / "runs" / f"{arm}-s{seed}.json").write_text(json.dumps(rec))


def test_paired_differences_over_common_seeds(tmp_path):
    _record(tmp_path, "uniform", 0, 0.6, 0.8, 0.6)
    _record(tmp_path, "uniform", 1, 0.7, 0.9, 0.5)
    _record(tmp_path, "uniform", 2, 0.9, 0.9, 0.5)  # no partner: left out
    _record(tmp_path, "bonus", 0, 0.7, 0.8, 0.4, mixed=0.6)
    _record(tmp_path, "bonus", 1, 0.7, 0.7, 0.5, mixed=0.8, rollouts=150)
    res = TP.paired(tmp_path, "bonus")
    assert res["seeds"] == [0, 1]
    assert res["final pass@1"]["uniform"] == pytest.approx(0.65)
    assert res["final pass@1"]["difference"]["mean"] == pytest.approx(0.05)
    assert res["pass@64"]["difference"]["mean"] == pytest.approx(-0.1)
    assert res["T=1 entropy drop"]["difference"]["mean"] == pytest.approx(-0.1)
    assert res["rollouts in mixed groups"]["difference"]["mean"] == pytest.approx(0.2)
    assert res["rollouts spent"]["ratio"]["mean"] == pytest.approx(0.75)  # 1 and 1/2
    # equal rollouts: seed 0 spends what uniform does (0.7 against 0.6); seed 1 stops at 150,
    # its points at 50, 100, 150 where uniform's curve (0.5 -> 0.7 at 100, then flat) is 0.6, 0.7, 0.7
    at_equal = ((0.7 - 0.6) + (0.7 - (0.6 + 0.7 + 0.7) / 3)) / 2
    assert res["final pass@1 at equal rollouts"]["difference"]["mean"] == pytest.approx(at_equal)
    # AUC: trapezoids (0.5 -> f over the first 100 rollouts, then flat) / 300
    auc = lambda f: ((0.5 + f) / 2 * 100 + f * 200) / 300  # noqa: E731
    assert res["AUC"]["difference"]["mean"] == pytest.approx((auc(0.7) - auc(0.6)) / 2)


def test_an_arm_without_records_is_a_clear_error(tmp_path):
    _record(tmp_path, "uniform", 0, 0.6, 0.8, 0.6)
    with pytest.raises(SystemExit, match="no records of arm 'bonus'"):
        TP.paired(tmp_path, "bonus")
