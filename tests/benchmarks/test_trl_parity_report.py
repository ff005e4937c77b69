"""The statistics of benchmarks/trl_parity.py's summary (trl_parity_report.py), on hand-computed cases."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import trl_parity_report as P  # noqa: E402


def test_paired_bootstrap_point_and_interval():
    # seed 0: a right on prompts 0, 1; b right on prompt 1 only -> +0.25
    # seed 1: a and b agree everywhere -> 0; the mean over seeds is +0.125
    a = [[True, True, False, False], [True, False, False, False]]
    b = [[False, True, False, False], [True, False, False, False]]
    d, lo, hi = P.paired_bootstrap(a, b, draws=2000)
    assert d == pytest.approx(0.125)
    # resampled means of a 0/1 difference present on one prompt of 4, averaged over 2 seeds
    assert 0.0 <= lo <= d <= hi <= 0.5


def test_paired_bootstrap_of_identical_arms_is_exactly_zero():
    a = [[True, False, True], [False, False, True]]
    assert P.paired_bootstrap(a, a, draws=100) == (0.0, 0.0, 0.0)


def test_seed_level_difference_matches_a_hand_computed_t_interval():
    # d = 0.6 - 0.5 = 0.1; pooled variance (0.02 + 0.02) / 2 = 0.02; se = sqrt(0.02 * (1/2 + 1/2))
    # = 0.14142; t(0.975, 2) = 4.303 -> half-width 0.6085
    text = P.seed_level_difference([0.5, 0.7], [0.4, 0.6])
    assert text.startswith("+0.100 ± 0.609") and "2 dof" in text and "sd 0.141" in text
    assert "too few runs" in P.seed_level_difference([0.5], [0.4])


@pytest.mark.parametrize(
    ("text", "form"),
    [
        ("#15", "direct"),
        (" # -3 ", "direct"),
        ("7+8=15#15", "worked"),
        ("7+8=15,15-5=10#10", "worked"),
        ("15", "no answer"),
        ("", "no answer"),
        ("15#15", "other"),
    ],
)
def test_response_form(text, form):
    assert P.response_form(text) == form


def test_t_multiplier_matches_the_tables_beyond_eight_dof():
    # 10 dof (6 + 6 runs) was once read as 2.0: the interval came out 10 % too narrow
    assert P.t975(10) == pytest.approx(2.228)
    assert P.t975(22) == pytest.approx(2.074)
    assert P.t975(100) == P.t975(30)  # beyond the table: the value at 30, on the wide side
    with pytest.raises(ValueError, match="degree of freedom"):
        P.t975(0)


def test_factorial_effects_by_hand():
    # cell means: TRL/generate 0.5, TRL/engine 0.4, e3rl/generate 0.3, e3rl/engine 0.2
    cells = {
        ("TRL", "generate"): [0.49, 0.51],
        ("TRL", "e3rl engine"): [0.39, 0.41],
        ("e3rl", "generate"): [0.29, 0.31],
        ("e3rl", "e3rl engine"): [0.19, 0.21, 0.20, 0.20],
    }
    eff = P.factorial_effects(cells)
    assert eff["trainer"][0] == pytest.approx((0.5 + 0.4 - 0.3 - 0.2) / 2)
    assert eff["generation"][0] == pytest.approx((0.5 + 0.3 - 0.4 - 0.2) / 2)
    assert eff["interaction"][0] == pytest.approx(0.0, abs=1e-12)
    # pooled ss = 3 * 2e-4 + 2e-4 = 8e-4 over 10 - 4 = 6 dof; contrast variance factor
    # 0.25 * (1/2 + 1/2 + 1/2 + 1/4) = 0.4375
    half = 2.447 * (8e-4 / 6 * 0.4375) ** 0.5
    assert eff["trainer"][1] == pytest.approx(half)
    assert eff["interaction"][1] == pytest.approx(2 * half)


def test_replay_lines_report_distance_trace_and_both_accuracies():
    runs = {
        "trl": {0: {"greedy_accuracy": 0.6}},
        "e3rl-replay": {
            0: {
                "greedy_accuracy": 0.45,
                "param_distance_to_trl": {"relative_l2": 0.006},
                "distance_trace": [{"step": 1, "distance": 0.0052, "their_move": 0.0}],
            }
        },
    }
    (line,) = [x for x in P.replay_lines(runs) if x.startswith("- ")]
    assert line == (
        "- e3rl-replay seed 0: distance 0.006, greedy 0.450 (0.600); after step k, distance / "
        "TRL's move: 1: 0.0052 / 0"
    )
    assert P.replay_lines({"trl": {}}) == []


def _record(out, arm, seed, correct):
    import json

    items = [
        {"correct": c, "level": 1 + i % 2, "response": "#3" if c else "1+2=4#4"}
        for i, c in enumerate(correct)
    ]
    acc = sum(correct) / len(correct)
    rec = {"arm": arm, "seed": seed, "greedy_accuracy": acc, "mean_at_8": acc / 2}
    rec["by_level"] = {"1": acc, "2": acc}
    rec["items"] = items
    (out / arm).mkdir(exist_ok=True)
    (out / arm / f"seed{seed}.json").write_text(json.dumps(rec))


def test_summary_lists_arms_in_the_given_order_with_their_means_and_paired_difference(tmp_path):
    _record(tmp_path, "e3rl", 0, [True, False, False, False])
    _record(tmp_path, "e3rl", 1, [True, True, False, False])
    _record(tmp_path, "trl", 0, [True, True, True, False])
    _record(tmp_path, "trl", 1, [True, True, True, True])
    text = P.summarize(tmp_path, None, ["trl", "e3rl", "absent"])
    rows = [line for line in text.splitlines() if line.startswith("| trl |")]
    assert rows[0].endswith("| 0.875 | 0.438 |")  # mean greedy (0.75 + 1) / 2, mean@8 half
    assert text.index("| trl |") < text.index("| e3rl |") and "absent" not in text
    # paired over seeds 0, 1: (0.75 - 0.25 + 1 - 0.5) / 2; TRL right where e3rl wrong 2 + 2 times
    assert "- trl − e3rl: +0.500 [" in text and "trl right / e3rl wrong: 4, the reverse: 0" in text
    # level 1 holds prompts 0 and 2: trl answers 4 of 4 directly, e3rl 2 directly and 2 worked
    assert "| e3rl | 2 (0) | 2 (2) | 0 (0) | 0 (0) |" in text


def test_seed_correlation_by_hand():
    rec = lambda xs: [{"greedy_accuracy": x} for x in xs]  # noqa: E731
    # x = 1, 2, 3 against y = 2, 4, 7: r = 5 / sqrt(2 * 12.667) = 0.9934
    assert P.seed_correlation(rec([1, 2, 3]), rec([2, 4, 7])) == pytest.approx(0.99340, abs=1e-5)
    assert P.seed_correlation(rec([1, 2]), rec([2, 4])) is None
    assert P.seed_correlation(rec([1, 1, 1]), rec([2, 4, 7])) is None


def test_non_inferiority_on_hand_computed_cases():
    # peer [0.45, 0.47, 0.46], ours [0.44, 0.44, 0.45]: d = 0.46 - 0.44333 = 0.016667;
    # variances 1e-4 and 3.333e-5 over 3 runs -> se = sqrt(3.333e-5 + 1.111e-5) = 0.0066667;
    # Welch dof = (4.444e-5)^2 / ((3.333e-5)^2 / 2 + (1.111e-5)^2 / 2) = 3.2 -> t95(3) = 2.353,
    # upper = 0.016667 + 0.015687 = 0.03235; t975(3) = 3.182, low = 0.016667 - 0.021213 < 0
    ni = P.non_inferiority([0.45, 0.47, 0.46], [0.44, 0.44, 0.45])
    assert ni["diff"] == pytest.approx(0.016667, abs=1e-6)
    assert ni["dof"] == pytest.approx(3.2, abs=1e-3)
    assert ni["upper95"] == pytest.approx(0.03235, abs=1e-5)
    assert ni["verdict"] == "undecided"
    # the same gap measured 8 times as tightly: the interval excludes 0, so ours learns less
    tight = P.non_inferiority(
        [0.46 + x / 8 for x in (-0.01, 0.01, 0)],
        [0.44333 + x / 8 for x in (-0.00333, -0.00333, 0.00667)],
    )
    assert tight["low95"] > 0 and tight["verdict"] == "less"
    # ours ahead: the upper bound is below the margin
    assert (
        P.non_inferiority([0.44, 0.45, 0.44], [0.45, 0.46, 0.46])["verdict"] == "at least as much"
    )
    with pytest.raises(ValueError, match="at least 2 runs"):
        P.non_inferiority([0.4], [0.4, 0.5])


def test_t95_table_against_known_quantiles():
    # one-sided 95 %: 1 dof 6.314, 10 dof 1.812, 30 dof 1.697; between rows, the smaller dof's
    assert (P.t95(1), P.t95(10), P.t95(30)) == (6.314, 1.812, 1.697)
    assert P.t95(35.9) == 1.697 and P.t95(44) == 1.684 and P.t95(500) == 1.658


def test_non_inferiority_of_identical_runs_is_decided_without_dividing_by_zero():
    ni = P.non_inferiority([0.44, 0.44], [0.44, 0.44])
    assert ni["diff"] == 0 and ni["upper95"] == 0 and ni["verdict"] == "at least as much"
