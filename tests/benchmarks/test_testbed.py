"""The testbed suite's statistics (benchmarks/testbed_stats.py) on hand-computed cases, its verdict
rules on constructed inputs, and its resumability (stubbed runner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import testbed as T  # noqa: E402
import testbed_report as R  # noqa: E402
import testbed_stats as S  # noqa: E402

# ---------------------------------------------------------------------------- curve estimators

CURVE = [[0, 0, 0.3], [10, 100, 0.4], [20, 200, 0.5]]


def test_rollouts_to_reach_interpolates_and_censors_at_the_total():
    assert S.rollouts_to_reach(CURVE, 0.45) == (150.0, False)  # halfway from 0.4 to 0.5
    assert S.rollouts_to_reach(CURVE, 0.5) == (200.0, False)
    assert S.rollouts_to_reach(CURVE, 0.3) == (0.0, False)  # the base is already there
    assert S.rollouts_to_reach(CURVE, 0.6) == (200.0, True)  # never: censored at the total


def test_rollouts_to_reach_takes_the_first_crossing():
    curve = [[0, 0, 0.3], [1, 100, 0.5], [2, 200, 0.2], [3, 300, 0.6]]
    assert S.rollouts_to_reach(curve, 0.4) == (pytest.approx(50.0), False)


def test_area_under_curve_is_the_mean_accuracy_over_rollouts():
    assert S.area_under_curve([[0, 0, 0.0], [1, 100, 1.0]]) == pytest.approx(0.5)
    # 50 rollouts at 0.2, then 50 rising from 0.2 to 0.6 (mean 0.4): (10 + 20) / 100
    assert S.area_under_curve([[0, 0, 0.2], [1, 50, 0.2], [2, 100, 0.6]]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="two points"):
        S.area_under_curve([[0, 0, 0.2]])


def test_smoothed_final_is_the_mean_of_the_last_three_points():
    assert S.smoothed_final([[0, 0, 0.0], [1, 1, 0.3], [2, 2, 0.6], [3, 3, 0.9]]) == pytest.approx(
        0.6
    )


def _linear(points: int = 11, step: int = 10) -> list[list[float]]:
    return [[i * step, i * 128, i * step / 100] for i in range(points)]


def test_late_gain_share_on_a_straight_line():
    # end = mean(0.8, 0.9, 1.0) = 0.9 (centred on step 90); mid = mean of steps 40, 50, 60 = 0.5
    # base 0: (0.9 - 0.5) / 0.9, the exact late share of the gain up to step 90
    assert S.late_gain_share(_linear()) == pytest.approx(0.4 / 0.9)


def test_late_gain_share_of_a_curve_flat_after_or_before_the_midpoint():
    early = [[s, s, min(s, 40) / 100] for s in range(0, 101, 10)]  # all gain by step 40
    assert S.late_gain_share(early) == pytest.approx(0.0)
    late = [[s, s, max(0, s - 60) / 100] for s in range(0, 101, 10)]  # nothing until step 60
    assert S.late_gain_share(late) == pytest.approx(1.0)


def test_late_gain_share_is_none_without_a_gain_or_enough_points():
    assert S.late_gain_share([[s, s, 0.5 - s / 1000] for s in range(0, 101, 10)]) is None
    assert S.late_gain_share(_linear(points=6)) is None  # 2 x 3 + 1 points needed


def test_pass_rate_spread_thresholds_are_strict():
    rates = [0.0, 0.05, 0.1, 0.5, 0.9, 0.95, 1.0, 1.0]
    assert S.pass_rate_spread(rates) == {"below_0.1": 2 / 8, "above_0.9": 3 / 8, "between": 3 / 8}


def test_head_tail_drop():
    values = [1.0] * 10 + [0.9] * 5 + [0.6] * 10
    assert S.head_tail_drop(values) == pytest.approx({"first": 1.0, "last": 0.6, "drop": 0.4})
    with pytest.raises(ValueError, match="at least 20"):
        S.head_tail_drop(values[:19])


# ---------------------------------------------------------------------------- bootstrap, verdicts


def test_bootstrap_of_two_values_spans_both():
    # resampled means of {0, 1}: 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    b = S.bootstrap_mean([0.0, 1.0])
    assert b == {"mean": 0.5, "ci95": [0.0, 1.0], "n": 2}


def test_bootstrap_interval_of_a_rare_value():
    # [0, 0, 0, 1]: P(mean = 0) = (3/4)^4 = 0.32 > 2.5 %; P(mean >= 0.75) = 4 (1/4)^3 (3/4) +
    # (1/4)^4 = 5.1 % > 2.5 % > P(mean = 1) = 0.4 %: the interval is [0, 0.75]
    b = S.bootstrap_mean([0.0, 0.0, 0.0, 1.0])
    assert b["mean"] == 0.25 and b["ci95"] == [0.0, 0.75]


def test_bootstrap_of_constants_and_of_nothing():
    assert S.bootstrap_mean([0.4] * 5)["ci95"] == pytest.approx([0.4, 0.4])
    assert S.bootstrap_mean([]) == {"mean": None, "ci95": None, "n": 0}


def test_bootstrap_is_reproducible_with_its_fixed_seed():
    values = [0.1, 0.5, 0.2, 0.9, 0.3, 0.35]
    assert S.bootstrap_mean(values) == S.bootstrap_mean(values)
    assert S.bootstrap_mean(values, seed=1) != S.bootstrap_mean(values)


N = S.MIN_SEEDS_FOR_VERDICT


@pytest.mark.parametrize(
    ("ci", "side", "censored", "expected"),
    [
        ([0.3, 0.6], "below", 0, S.REPRODUCED),
        ([0.3, 0.63], "below", 0, S.UNDECIDED),  # touching the target is not excluding it
        ([0.3, 0.6], "below", 1, S.UNDECIDED),  # a censored seed: the upper end is a guess
        ([0.64, 0.9], "below", 0, S.REFUTED),
        ([0.64, 0.9], "below", 2, S.REFUTED),  # censoring only makes refuting harder
        ([0.5, 0.7], "below", 0, S.UNDECIDED),
        ([0.7, 0.9], "above", 0, S.REPRODUCED),
        ([0.1, 0.6], "above", 0, S.REFUTED),
    ],
)
def test_verdict_rules(ci, side, censored, expected):
    assert S.verdict(ci, 0.63, side, N, censored) == expected


def test_verdict_needs_the_declared_number_of_seeds():
    assert S.verdict([0.1, 0.2], 0.63, "below", N - 1) == S.UNDECIDED
    assert S.verdict(None, 0.63, "below", 0) == S.UNDECIDED
    with pytest.raises(ValueError, match="side"):
        S.verdict([0.1, 0.2], 0.63, "under", N)


# ---------------------------------------------------------------------------- the summary

UNIFORM = [[0, 0, 0.3], [1, 100, 0.4], [2, 200, 0.5], [3, 300, 0.6], [4, 400, 0.6], [5, 500, 0.6]]


def _record(arm: str, seed: int, curve, passk=None, tracking=None) -> dict:
    return {
        "arm": arm,
        "seed": seed,
        "val_curve": curve,
        "final_val_accuracy": curve[-1][2],
        "pass_at_k": passk or {"greedy": 0.5, "64": 0.8},
        "mean_frac_rollouts_all_wrong": 0.2,
        "mean_frac_rollouts_all_correct": 0.1,
        "mean_frac_rollouts_mixed": 0.7,
        "entropy_tracking": tracking,
        "step_seconds": 1.0,
        "budget_ok": True,
    }


def _suite() -> list[dict]:
    fast = [[0, 0, 0.3], [1, 100, 0.6], [2, 200, 0.7], [3, 300, 0.7], [4, 400, 0.7], [5, 500, 0.7]]
    never = [[s, 100 * s, 0.3 + 0.01 * s] for s in range(6)]
    held = {"drift": 0.0, "per_step_abs_dev": 0.15, "rolling10_abs_dev": 0.05}
    recs = []
    for s in range(N):
        recs.append(_record("uniform", s, UNIFORM, {"greedy": 0.5, "64": 0.8}))
        recs.append(_record("e3rl", s, fast, {"greedy": 0.6, "64": 0.9}, held))
        recs.append(_record("paper", s, never, {"greedy": 0.4, "64": 0.6}))
    return recs


def test_summary_pairs_each_seed_with_its_uniform_run_and_decides():
    s = S.summarize(_suite(), {"greedy": 0.5, "64": 0.85}, {"name": "toy"})
    # e3rl reaches uniform's final (0.6) at 100 of uniform's 500 rollouts in every seed
    e3 = s["claims"]["rollout_saving_vs_uniform"]["e3rl"]
    assert e3["ratio"]["mean"] == pytest.approx(0.2) and e3["ratio"]["ci95"] == pytest.approx(
        [0.2, 0.2]
    )
    assert e3["verdict"] == S.REPRODUCED and e3["saving_verdict"] == S.REPRODUCED
    # paper never gets there: censored at its total (ratio 1), which excludes 0.63 from above
    paper = s["claims"]["rollout_saving_vs_uniform"]["paper"]
    assert paper["ratio"]["censored"] == N and paper["ratio"]["mean"] == pytest.approx(1.0)
    assert paper["verdict"] == S.REFUTED and paper["saving_verdict"] == S.UNDECIDED
    # over what uniform itself needed for its final (0.6 at 300): 100 / 300; paper 500 / 300
    assert e3["ratio_vs_uniform_reach"]["mean"] == pytest.approx(1 / 3)
    assert e3["verdict_vs_uniform_reach"] == S.REPRODUCED
    assert paper["ratio_vs_uniform_reach"]["mean"] == pytest.approx(5 / 3)
    assert paper["verdict_vs_uniform_reach"] == S.REFUTED
    # 90 % of uniform's gain: 0.3 + 0.9 x 0.3 = 0.57, uniform itself at 270 of 500
    u90 = s["arms"]["uniform"]["rollouts_to_90pct_uniform_gain_ratio"]
    assert u90["mean"] == pytest.approx(270 / 500)
    assert s["arms"]["e3rl"]["auc"]["mean"] == pytest.approx((45 + 65 + 70 * 3) / 500)


def test_summary_passk_and_entropy_claims():
    s = S.summarize(_suite(), {"greedy": 0.5, "64": 0.85}, {"name": "toy"})
    pk = s["claims"]["passk_vs_base"]
    assert pk["e3rl"]["k"] == 64 and pk["e3rl"]["minus_base"]["mean"] == pytest.approx(0.05)
    assert pk["e3rl"]["verdict_vs_base"] == S.REPRODUCED
    assert pk["e3rl"]["minus_uniform"]["mean"] == pytest.approx(0.1)
    assert pk["paper"]["verdict_vs_base"] == S.REFUTED  # 0.6 - 0.85, far below the margin
    assert pk["uniform"]["verdict_vs_base"] == S.REFUTED  # -0.05 < -PASSK_MARGIN
    ent = s["claims"]["entropy_held"]
    assert set(ent) == {"e3rl"} and ent["e3rl"]["verdict"] == S.REPRODUCED


def test_summary_without_uniform_is_refused():
    with pytest.raises(ValueError, match="uniform"):
        S.summarize([r for r in _suite() if r["arm"] != "uniform"], {}, {})


def test_markdown_has_a_row_per_arm_and_the_verdicts(tmp_path):
    block = {
        "name": "toy",
        "model_params": 10,
        "step_seconds": 1.0,
        "base_pass_rate_spread": {"below_0.1": 0.3, "above_0.9": 0.2, "between": 0.5},
        "uniform_late_gain_share": 0.4,
        "uniform_entropy_drop": {"drop": 0.35},
        "uniform_passk_minus_base": {"16": -0.01},
        "properties": {},
        "source": "test",
    }
    summary = S.summarize(_suite(), {"greedy": 0.5, "64": 0.85}, block)
    md = R.to_markdown(summary)
    for arm in ("uniform", "e3rl", "paper"):
        assert f"| {arm} | {N} |" in md
    assert "rollout saving, e3rl: ratio 0.200 [0.200, 0.200]" in md and "**refuted**" in md
    assert "Records made at commit(s) unknown." in md
    md = R.to_markdown({**summary, "commits": ["0123456789ab", "fedcba987654"]})
    assert "Records made at commit(s) 0123456, fedcba9." in md


def test_candidate_properties_against_the_thresholds():
    rising = [[s, 128 * s, 0.3 + 0.003 * s] for s in range(0, 101, 10)]
    uniform = [
        {
            **_record("uniform", s, rising, {"greedy": 0.5, "16": 0.7, "32": 0.78}),
            "entropy_t1_head_tail": {"first": 0.5, "last": 0.3, "drop": 0.4},
        }
        for s in range(2)
    ]
    rates = [0.0] * 25 + [1.0] * 25 + [0.5] * 50
    c = S.candidate_properties(uniform, {"greedy": 0.5, "16": 0.72, "32": 0.8}, rates)
    assert c["uniform_entropy_drop"]["drop"] == pytest.approx(0.4)
    assert c["uniform_passk_minus_base"] == pytest.approx({"16": -0.02, "32": -0.02})
    assert c["properties"] == {"spread": True, "long_curve": True, "collapse": True, "cheap": True}
    flat = [{**u, "step_seconds": 2.0} for u in uniform]
    c = S.candidate_properties(flat, {"greedy": 0.5, "16": 0.6}, [0.5] * 10)
    assert c["properties"] == {
        "spread": False,
        "long_curve": True,
        "collapse": False,  # pass@16 ends above the base's
        "cheap": False,
    }


# ---------------------------------------------------------------------------- records, jobs


def _rows(n: int = 4, rollouts=128) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        rows.append(
            {
                "step": s,
                "rollouts": rollouts if s != 2 else 120,
                "cum_rollouts": 128 * s,
                "entropy": 0.5,
                "entropy_t1": 0.5 - 0.1 * s,
                "target_entropy": None,
                "temperature": 1.0,
                "frac_all_wrong": 0.2,
                "frac_all_correct": 0.1,
                "frac_mixed": 0.7,
                "frac_rollouts_all_wrong": 0.25,
                "frac_rollouts_all_correct": 0.05,
                "frac_rollouts_mixed": 0.7,
                "time_plan": 0.0,
                "time_generate": 0.1 * s,
                "time_reward": 0.0,
                "time_update": 1.0,
                **({"val_accuracy": 0.4} if s % 2 == 0 else {}),
            }
        )
    return rows


def test_record_checks_the_budget_and_takes_the_median_step_time():
    tb = {"name": "toy", "steps": 4, "eval_every": 2, "pass_n": 4, "budget": 128}
    summary = {"base_val_accuracy": 0.3, "final_val_accuracy": 0.4, "rollouts": 504, "tokens": 1}
    rec = T.make_record("uniform", 0, tb, [], _rows(), summary, {"greedy": 0.4}, 1.0, 1, 0.3)
    assert not rec["budget_ok"] and rec["rollouts_per_step"] == {"min": 120, "max": 128}
    assert rec["step_seconds"] == pytest.approx(1.25)  # median of 1.1, 1.2, 1.3, 1.4
    assert rec["val_curve"] == [[0, 0, 0.3], [2, 256, 0.4], [4, 512, 0.4]]
    assert rec["entropy_t1_head_tail"] == pytest.approx(
        {"first": 0.35, "last": 0.15, "drop": 4 / 7}
    )
    # an arm that skips rollouts may spend less than the budget, never more
    skips = ["budget.skip_below=0.2"]
    rec = T.make_record("skip", 0, tb, skips, _rows(), summary, {"greedy": 0.4}, 1.0, 1, 0.3)
    assert rec["budget_ok"]
    tb["budget"] = 124
    rec = T.make_record("skip", 0, tb, skips, _rows(), summary, {"greedy": 0.4}, 1.0, 1, 0.3)
    assert not rec["budget_ok"]


def test_a_pass_at_1_testbed_reads_the_sampled_validation_and_starts_at_the_base_point():
    tb = {
        "name": "toy",
        "steps": 4,
        "eval_every": 2,
        "pass_n": 4,
        "budget": 128,
        "accuracy": "pass@1",
    }
    rows = _rows()
    for r in rows:
        if "val_accuracy" in r:
            r["val_pass@1"] = {2: 0.3, 4: 0.4}[r["step"]]
    summary = {"base_val_accuracy": 0.3, "final_val_accuracy": 0.4, "rollouts": 504, "tokens": 1}
    rec = T.make_record("uniform", 0, tb, [], rows, summary, {"greedy": 0.4}, 1.0, 1, 0.25)
    assert rec["val_curve"] == [[0, 0, 0.25], [2, 256, 0.3], [4, 512, 0.4]]
    assert rec["greedy_curve"] == [[0, 0, 0.3], [2, 256, 0.4], [4, 512, 0.4]]
    assert (rec["base_val_accuracy"], rec["final_val_accuracy"]) == (0.25, 0.4)
    assert rec["accuracy"] == "pass@1"


def test_run_jobs_skips_jobs_with_a_record_and_keeps_going_after_a_failure(tmp_path):
    T._write_json(T.record_path(tmp_path, "uniform", 0), {"arm": "uniform", "seed": 0, "old": 1})
    calls = []

    def runner(arm: str, seed: int) -> dict:
        calls.append((arm, seed))
        if arm == "e3rl":
            raise RuntimeError("boom")
        return {"arm": arm, "seed": seed, "base_val_accuracy": 0.3, "final_val_accuracy": 0.4}

    jobs = [("uniform", 0), ("uniform", 1), ("e3rl", 0)]
    failures = T.run_jobs(jobs, tmp_path, runner, n_jobs=1)
    assert sorted(calls) == [("e3rl", 0), ("uniform", 1)]
    assert failures == ["e3rl-s0: boom"]
    assert json.loads(T.record_path(tmp_path, "uniform", 0).read_text())["old"] == 1
    assert T.record_path(tmp_path, "uniform", 1).is_file()
    assert not T.record_path(tmp_path, "e3rl", 0).exists()
    calls.clear()
    T.run_jobs(jobs, tmp_path, runner, n_jobs=2)  # a rerun does only what is missing
    assert calls == [("e3rl", 0)]


def test_the_suites_records_are_not_ignored_by_git():
    """The records are the suite's memory across sessions: a `runs/` rule in .gitignore once
    swallowed them (only summary.json survived a fresh checkout)."""
    for arm_record in (T.record_path(T.RESULTS, "uniform", 0),
                       T.record_path(T.RESULTS / "candidates" / "x", "uniform", 0)):  # fmt: skip
        ignored = subprocess.run(["git", "check-ignore", "-q", str(arm_record)], cwd=REPO)
        if ignored.returncode == 128:
            pytest.skip("not a git checkout")
        assert ignored.returncode == 1, f"{arm_record} is ignored by git"


def test_records_made_with_other_settings_are_refused(tmp_path):
    rec = {"arm": "uniform", "seed": 0, "testbed": "arith", "steps": 300, "eval_every": 25,
           "pass_n": 64, "threads": 1}  # fmt: skip
    T._write_json(T.record_path(tmp_path, "uniform", 0), rec)
    tb = {"name": "arith", "steps": 20, "eval_every": 25, "pass_n": 64, "threads": 1}
    with pytest.raises(SystemExit, match="uniform-s0.json was made with .*'steps': 300"):
        T.check_settings(tmp_path, tb)
    with pytest.raises(SystemExit, match="'threads': 1"):
        T.check_settings(tmp_path, {**tb, "steps": 300, "threads": 2})
    T.check_settings(tmp_path, {**tb, "steps": 300})


@pytest.mark.slow
def _greedy(responses: list[str]) -> dict:
    items = [{"id": f"p{i}", "response": r, "correct": r == "ok"} for i, r in enumerate(responses)]
    return {"greedy_accuracy": sum(i["correct"] for i in items) / len(items), "items": items}


def test_a_base_that_behaves_otherwise_is_refused_and_the_same_is_accepted(tmp_path):
    here = _greedy(["ok", "no", "ok"])
    cached = {"greedy_fingerprint": T.greedy_fingerprint(here), "pass_at_k": {"greedy": 2 / 3}}
    T.check_same_base(cached, _greedy(["ok", "no", "ok"]), tmp_path / "base.json")
    # the same accuracy from other answers: another base, caught by the fingerprint
    with pytest.raises(SystemExit, match="another base model.*fingerprint"):
        T.check_same_base(cached, _greedy(["ok", "ok", "nope"]), tmp_path / "base.json")
    # a base.json from before fingerprints: its greedy accuracy is what is compared
    old = {"pass_at_k": {"greedy": 2 / 3}}
    T.check_same_base(old, _greedy(["no", "ok", "ok"]), tmp_path / "base.json")
    with pytest.raises(SystemExit, match=r"0\.6667 there, 0\.3333 here"):
        T.check_same_base(old, _greedy(["ok", "no", "no"]), tmp_path / "base.json")


@pytest.mark.slow  # 80-160 s: builds the base and runs the suite (docs/benchmarks.md "Commands")
def test_quick_mode_end_to_end_two_steps(tmp_path):
    out = tmp_path / "out"
    # the chosen testbed (validated on pass@1) with a base small enough to build in seconds
    cmd = [sys.executable, str(REPO / "benchmarks" / "testbed.py"), "--quick", "--steps", "2",
           "--eval-every", "1", "--pass-n", "2", "--seeds", "0", "--out", str(out),
           "--runs-dir", str(tmp_path / "runs"), "model.warm_start.steps=20",
           "task.train_size=64", "task.val_size=16",
           "rollout.temperature=1.2"]  # sampling off T = 1, so both arms' finals are also evaluated there  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
           "E3RL_CACHE": str(tmp_path / "cache")}  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert set(s["arms"]) == {"uniform", "e3rl"} and (out / "suite.png").is_file()
    for key in ("name", "model_params", "step_seconds", "base_pass_rate_spread"):
        assert key in s["testbed"]
    assert set(s["claims"]) == {"rollout_saving_vs_uniform", "passk_vs_base", "entropy_held"}
    rec = json.loads((out / "runs" / "e3rl-s0.json").read_text())
    assert rec["budget_ok"] and not (tmp_path / "runs" / "e3rl-s0" / "final").exists()
    assert rec["testbed"] == T.CHOSEN and rec["accuracy"] == T.TESTBEDS[T.CHOSEN]["accuracy"]
    assert [p[0] for p in rec["val_curve"]] == [0, 1, 2]
    # the final evaluation by level: counts add up to the validation split
    assert sum(v["count"] for v in rec["by_level"].values()) == 16
    assert all(0.0 <= v["pass@2"] <= 1.0 for v in rec["by_level"].values())
    # a run that ends sampling off T = 1 is also evaluated at the temperature it ended at
    for arm in ("uniform", "e3rl"):
        rows = (tmp_path / "runs" / f"{arm}-s0" / "metrics.jsonl").read_text().splitlines()
        at_t = json.loads((out / "runs" / f"{arm}-s0.json").read_text())
        at_t = at_t["pass_at_k_final_temperature"]
        assert at_t["temperature"] == json.loads(rows[-1])["temperature"] == pytest.approx(1.2)
        assert {"greedy", "1", "2"} <= set(at_t["pass_at_k"])
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "2 of 2 jobs already have a record" in again.stdout


def test_measure_candidate_writes_its_json_and_a_table_row(tmp_path):
    rising = [[s, 128 * s, 0.3 + 0.003 * s] for s in range(0, 101, 10)]
    out, cands = tmp_path / "out", tmp_path / "cands"
    for seed in (0, 1):
        rec = {
            **_record("uniform", seed, rising, {"greedy": 0.5, "16": 0.7, "32": 0.78}),
            "entropy_t1_head_tail": {"first": 0.5, "last": 0.3, "drop": 0.4},
            "testbed": "arith", "steps": 100, "eval_every": 10, "pass_n": 32, "threads": 2,
            "overrides": ["data.train_limit=800"], "model_params": 1234,
        }  # fmt: skip
        T._write_json(T.record_path(out, "uniform", seed), rec)
    rates = [0.0] * 25 + [1.0] * 25 + [0.5] * 50
    T._write_json(
        out / "base.json", {"pass_at_k": {"16": 0.72, "32": 0.8}, "train_pass_rates": rates}
    )
    c = T.measure_candidate("arith", out, cands, "arith-quick")
    assert c["all_pass"] and json.loads((cands / "arith-quick.json").read_text()) == c
    row = (cands / "candidates.md").read_text().splitlines()[-1]
    assert row.startswith("| arith-quick | 1234 | 100 x 2 | 0.25 / 0.25 / 0.50 |")
    assert row.endswith("| -0.020 / -0.020 | 1.00 (2) | pass | pass | pass | pass |")


def test_a_step_timed_alone_replaces_the_shared_figure_and_decides_cheap(tmp_path):
    cands, out = tmp_path / "cands", tmp_path / "out"
    cand = {
        "model_params": 10, "base_pass_rate_spread": {"below_0.1": 0.3}, "step_seconds": 1.9,
        "uniform_late_gain_share": 0.1, "uniform_entropy_drop": {"drop": 0.5},
        "uniform_passk_minus_base": {"16": -0.05},
        "properties": {"spread": False, "long_curve": False, "collapse": True, "cheap": False},
    }  # fmt: skip
    T._write_json(cands / "tb.json", cand)
    assert T.testbed_block("tb", out, cands, [], {})["properties"]["cheap"] is False
    timed = {"testbed": "tb", "median": 0.8, "threads": 2, "cpu": "X", "cheap": True}
    T._write_json(out / "step_seconds.json", timed)
    block = T.testbed_block("tb", out, cands, [], {})
    assert (block["step_seconds"], block["step_seconds_shared"]) == (0.8, 1.9)
    assert block["properties"] == {**cand["properties"], "cheap": True}
    T._write_json(out / "step_seconds.json", {**timed, "testbed": "other"})
    assert T.testbed_block("tb", out, cands, [], {})["step_seconds"] == 1.9  # another testbed's


def test_pass_at_k_at_the_final_temperature_over_the_seeds_that_have_it():
    curve = [[0, 0, 0.3], [1, 100, 0.5]]
    recs = [_record("uniform", s, curve) for s in range(3)]
    for s, (t, p64) in enumerate([(1.4, 0.90), (1.6, 0.94), (None, None)]):
        rec = _record("e3rl", s, curve)
        if t is not None:
            rec["pass_at_k_final_temperature"] = {"temperature": t, "pass_at_k": {"64": p64}}
        recs.append(rec)
    arms = S.summarize(recs, {"greedy": 0.5, "64": 0.9}, {})["arms"]
    at = arms["e3rl"]["pass_at_k_final_temperature"]
    assert at["seeds"] == [0, 1]
    assert at["temperature"]["mean"] == pytest.approx(1.5)
    assert at["pass_at_k"]["64"]["mean"] == pytest.approx(0.92)
    assert arms["uniform"]["pass_at_k_final_temperature"] is None
    line = R.final_temperature_lines({"arms": arms}, ["64"])
    assert any(
        ln.startswith("- e3rl (seeds 0, 1) at its final sampling temperature 1.50") for ln in line
    )
