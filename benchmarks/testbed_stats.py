"""The statistics of the testbed suite (benchmarks/testbed.py): pure functions of its records.

A record is one (arm, seed) run as testbed.py writes it; a validation curve is a list of
``[step, cumulative rollouts, greedy accuracy]`` starting with ``[0, 0, base accuracy]``. Every
estimator, threshold and verdict rule here is declared in docs/benchmarks.md ("Testbed") before
any measurement; change them there first.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import arms  # benchmarks/ is on the path: run as a script, or tests put it there
import numpy as np

# ---- declared before measuring (issue 15, section 1): what a testbed must have
SPREAD_BELOW_MIN = 0.20  # share of training prompts with base pass rate < 0.1
SPREAD_ABOVE_MIN = 0.20  # ... with base pass rate > 0.9
SPREAD_BETWEEN_MIN = 0.30  # ... in [0.1, 0.9]
LATE_GAIN_SHARE_MIN = 1 / 3  # share of uniform's gain after the run's midpoint
ENTROPY_DROP_MIN = 0.30  # relative fall of uniform's T=1 entropy, first vs last 10 steps
PASSK_COLLAPSE_KS = ("16", "32")  # uniform's final pass@k must end below the base's at one
STEP_SECONDS_MAX = 1.5  # median seconds per training step on 2 cores
HEAD_TAIL_STEPS = 10  # steps averaged at each end of the entropy trajectory

# ---- the comparison (section 2)
SMOOTH_POINTS = 3  # validation points averaged for a run's "final" accuracy
BOOT_RESAMPLES = 10_000
BOOT_SEED = 15  # the number: the intervals are reproducible bit for bit
MIN_SEEDS_FOR_VERDICT = 8  # fewer paired seeds: "undecided at this power", whatever the interval
# Claimed ratio of rollouts-to-uniform's-final over uniform's total (paper: 37 % fewer).
SAVING_TARGETS = {"paper": 0.63, "e3rl": 0.5}
PASSK_MARGIN = 0.01  # "at least the base's / uniform's pass@k": not below it by more than this
ENTROPY_TOLERANCE = 0.10  # entropy within +-10 % of its target (10-step rolling mean)

REPRODUCED, REFUTED, UNDECIDED = "reproduced", "refuted", "undecided at this power"
GROUPS = ("all_wrong", "all_correct", "mixed")


# --------------------------------------------------------------------------- curve estimators


def smoothed_final(curve: Sequence[Sequence[float]], points: int = SMOOTH_POINTS) -> float:
    """A run's final accuracy: the mean of its last `points` validation points (one validation
    of a few hundred prompts has a standard error of ~0.03; the mean of three cuts it)."""
    if not curve:
        raise ValueError("empty validation curve")
    return statistics.fmean(p[2] for p in curve[-points:])


def area_under_curve(curve: Sequence[Sequence[float]]) -> float:
    """Area under accuracy against cumulative rollouts (trapezoids), divided by the run's total
    rollouts: the mean accuracy over the budget spent."""
    x = np.array([p[1] for p in curve], dtype=float)
    y = np.array([p[2] for p in curve], dtype=float)
    if len(x) < 2 or x[-1] <= x[0]:
        raise ValueError("a validation curve needs two points with rollouts between them")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def rollouts_to_reach(curve: Sequence[Sequence[float]], target: float) -> tuple[float, bool]:
    """(cumulative rollouts at which the curve first reaches `target`, censored): arms.py's
    reading (linear between validation points); a curve that never reaches it is censored at
    its total rollouts, a lower bound of what the arm would need."""
    reach = arms.rollouts_to_reach([list(p) for p in curve], target)
    return (float(curve[-1][1]), True) if reach is None else (float(reach), False)


def late_gain_share(curve: Sequence[Sequence[float]], points: int = SMOOTH_POINTS) -> float | None:
    """Share of a run's gain that comes after its midpoint step.

    end = mean of the last `points` validation points, mid = mean of the `points` points whose
    steps are nearest the midpoint (ties: the earlier), base = the step-0 point; share =
    (end - mid) / (end - base). Both windows are means, so the share is that of the gain up to
    the end window's centre (a few validations before the last step): on a curve still rising
    it reads slightly low, never high. None when it cannot be measured: no gain (end <= base),
    or fewer than 2 * points + 1 validation points.
    """
    if len(curve) < 2 * points + 1:
        return None
    base, end = curve[0][2], smoothed_final(curve, points)
    half = curve[-1][0] / 2
    near = sorted(curve[1:], key=lambda p: (abs(p[0] - half), p[0]))[:points]
    mid = statistics.fmean(p[2] for p in near)
    return (end - mid) / (end - base) if end > base else None


def pass_rate_spread(rates: Sequence[float]) -> dict[str, float]:
    """Shares of prompts whose pass rate is below 0.1, above 0.9, and in between."""
    r = np.asarray(rates, dtype=float)
    if r.size == 0:
        raise ValueError("no pass rates")
    below, above = float(np.mean(r < 0.1)), float(np.mean(r > 0.9))
    return {"below_0.1": below, "above_0.9": above, "between": 1.0 - below - above}


def head_tail_drop(values: Sequence[float], steps: int = HEAD_TAIL_STEPS) -> dict[str, float]:
    """Mean of the first and last `steps` values and the relative fall between them."""
    if len(values) < 2 * steps:
        raise ValueError(f"needs at least {2 * steps} values, got {len(values)}")
    first, last = statistics.fmean(values[:steps]), statistics.fmean(values[-steps:])
    return {"first": first, "last": last, "drop": 1.0 - last / first}


# --------------------------------------------------------------------------- intervals, verdicts


def bootstrap_mean(
    values: Sequence[float], resamples: int = BOOT_RESAMPLES, seed: int = BOOT_SEED
) -> dict[str, Any]:
    """Mean over seeds and its 95 % percentile-bootstrap interval (resampling seeds)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"mean": None, "ci95": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(resamples, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(v.mean()), "ci95": [float(lo), float(hi)], "n": int(v.size)}


def verdict(ci: Sequence[float] | None, target: float, side: str, n: int, censored: int = 0) -> str:
    """The verdict on a claim "the statistic is `side` ('below' or 'above') `target`".

    reproduced: the whole interval is on the claimed side (strictly) and no seed is censored
    (a censored value is a lower bound, so the interval could be wider on the claimed side's
    far end); refuted: the whole interval is strictly on the other side (censoring only makes
    this harder); otherwise, or with fewer than MIN_SEEDS_FOR_VERDICT seeds, undecided.
    """
    if side not in ("below", "above"):
        raise ValueError(f"side must be 'below' or 'above', got {side!r}")
    if ci is None or n < MIN_SEEDS_FOR_VERDICT:
        return UNDECIDED
    lo, hi = ci
    claimed = hi < target if side == "below" else lo > target
    against = lo > target if side == "below" else hi < target
    if claimed and censored == 0:
        return REPRODUCED
    if against:
        return REFUTED
    return UNDECIDED


# --------------------------------------------------------------------------- the suite's summary


def _by_arm_seed(records: Sequence[dict]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in records:
        out.setdefault(r["arm"], {})[int(r["seed"])] = r
    return out


def _reach_stats(
    name: str, values: list[tuple[float, bool]], totals: list[float]
) -> dict[str, dict[str, Any]]:
    """Rollouts to a target (censored at the run's total), and their ratio to the same seed's
    uniform total, as NAME and NAME_ratio."""
    censored = sum(c for _, c in values)
    stats = bootstrap_mean([v for v, _ in values])
    ratio = bootstrap_mean([v / t for (v, _), t in zip(values, totals, strict=True)])
    return {name: {**stats, "censored": censored}, f"{name}_ratio": {**ratio, "censored": censored}}


def _arm_block(runs: dict[int, dict], uniform: dict[int, dict]) -> dict[str, Any]:
    seeds = sorted(runs)
    paired = [s for s in seeds if s in uniform]
    to_final, to_gain, totals, vs_reach = [], [], [], []
    for s in paired:
        u, curve = uniform[s]["val_curve"], runs[s]["val_curve"]
        final_u = smoothed_final(u)
        to_final.append(rollouts_to_reach(curve, final_u))
        to_gain.append(rollouts_to_reach(curve, u[0][2] + 0.9 * (final_u - u[0][2])))
        totals.append(float(u[-1][1]))
        own = rollouts_to_reach(u, final_u)[0]  # a smoothed target: reached before the end
        if own > 0:  # 0: uniform's final is not above its base, no ratio
            vs_reach.append(to_final[-1][0] / own)
    ks = sorted({k for r in runs.values() for k in r["pass_at_k"]}, key=_k_order)
    tracked = [runs[s]["entropy_tracking"] for s in seeds if runs[s].get("entropy_tracking")]
    return {
        "seeds": seeds,
        "paired_seeds": paired,
        "final_acc": bootstrap_mean([runs[s]["final_val_accuracy"] for s in seeds]),
        "smoothed_final_acc": bootstrap_mean([smoothed_final(runs[s]["val_curve"]) for s in seeds]),
        "auc": bootstrap_mean([area_under_curve(runs[s]["val_curve"]) for s in seeds]),
        **_reach_stats("rollouts_to_uniform_final", to_final, totals),
        **_reach_stats("rollouts_to_90pct_uniform_gain", to_gain, totals),
        # the same over what uniform itself needed to reach its smoothed final (censored seeds
        # as in the ratio above): what a saving is worth where uniform's own curve plateaus
        "rollouts_to_uniform_final_vs_uniform_reach": {
            **bootstrap_mean(vs_reach),
            "censored": sum(c for _, c in to_final),
        },
        "pass_at_k": {
            k: bootstrap_mean([runs[s]["pass_at_k"][k] for s in seeds if k in runs[s]["pass_at_k"]])
            for k in ks
        },
        "pass_at_k_final_temperature": _passk_at_final_t(runs, seeds, ks),
        "group_shares": {
            g: bootstrap_mean([runs[s][f"mean_frac_rollouts_{g}"] for s in seeds]) for g in GROUPS
        },
        "entropy_rolling10_abs_dev": bootstrap_mean([t["rolling10_abs_dev"] for t in tracked]),
        "entropy_per_step_abs_dev": bootstrap_mean([t["per_step_abs_dev"] for t in tracked]),
        "entropy_drift": bootstrap_mean([t["drift"] for t in tracked]),
        "step_seconds_median": statistics.median(runs[s]["step_seconds"] for s in seeds),
        "budget_ok": all(runs[s]["budget_ok"] for s in seeds),
    }


def _passk_at_final_t(runs: dict[int, dict], seeds: list[int], ks: list[str]) -> dict | None:
    """pass@k at the temperature each run ended sampling at, over the seeds that have it (runs
    that end at T = 1 are evaluated at T = 1 only)."""
    at = {s: runs[s].get("pass_at_k_final_temperature") for s in seeds}
    at = {s: a for s, a in at.items() if a}
    if not at:
        return None
    return {
        "seeds": sorted(at),
        "temperature": bootstrap_mean([a["temperature"] for a in at.values()]),
        "pass_at_k": {
            k: bootstrap_mean([a["pass_at_k"][k] for a in at.values() if k in a["pass_at_k"]])
            for k in ks
        },
    }


def _k_order(k: str) -> tuple[int, str]:
    return (int(k), "") if k.isdigit() else (-1, k)


def _saving_claims(arms: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for arm, target in SAVING_TARGETS.items():
        if arm not in arms:
            continue
        ratio = arms[arm]["rollouts_to_uniform_final_ratio"]
        n, cens = ratio["n"], ratio["censored"]
        out[arm] = {
            "arm": arm,
            "target": target,
            "ratio": ratio,
            "verdict": verdict(ratio["ci95"], target, "below", n, cens),
            # the weaker claim, "any saving at all": the interval excludes 1 (no saving)
            "saving_verdict": verdict(ratio["ci95"], 1.0, "below", n, cens),
        }
        alt = arms[arm]["rollouts_to_uniform_final_vs_uniform_reach"]
        out[arm]["ratio_vs_uniform_reach"] = alt
        out[arm]["verdict_vs_uniform_reach"] = verdict(alt["ci95"], target, "below", alt["n"], cens)
    return out


def _passk_claims(
    by_arm: dict[str, dict[int, dict]], base_passk: dict[str, float]
) -> dict[str, dict]:
    uniform = by_arm.get("uniform", {})
    ks = [k for k in base_passk if k.isdigit()]
    if not ks:
        return {}
    k = max(ks, key=int)
    out = {}
    for arm, runs in by_arm.items():
        vals = {s: r["pass_at_k"][k] for s, r in runs.items() if k in r["pass_at_k"]}
        vs_base = bootstrap_mean([v - base_passk[k] for v in vals.values()])
        block = {
            "k": int(k),
            "minus_base": vs_base,
            "verdict_vs_base": verdict(vs_base["ci95"], -PASSK_MARGIN, "above", vs_base["n"]),
        }
        if arm != "uniform":
            diffs = [v - uniform[s]["pass_at_k"][k] for s, v in vals.items() if s in uniform]
            vs_u = bootstrap_mean(diffs)
            block["minus_uniform"] = vs_u
            block["verdict_vs_uniform"] = verdict(vs_u["ci95"], -PASSK_MARGIN, "above", vs_u["n"])
        out[arm] = block
    return out


def _entropy_claims(arms: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for arm, a in arms.items():
        dev = a["entropy_rolling10_abs_dev"]
        if dev["n"]:
            out[arm] = {
                "abs_dev": dev,
                "tolerance": ENTROPY_TOLERANCE,
                "verdict": verdict(dev["ci95"], ENTROPY_TOLERANCE, "below", dev["n"]),
            }
    return out


def summarize(
    records: Sequence[dict], base_passk: dict[str, float], testbed: dict[str, Any]
) -> dict[str, Any]:
    """summary.json: the testbed's block, per-arm statistics over seeds, and the claims."""
    by_arm = _by_arm_seed(records)
    if "uniform" not in by_arm:
        raise ValueError("the summary needs the uniform arm's runs: every ratio is paired to it")
    arms = {arm: _arm_block(runs, by_arm["uniform"]) for arm, runs in by_arm.items()}
    return {
        "testbed": testbed,
        "settings": {
            "smooth_points": SMOOTH_POINTS,
            "bootstrap_resamples": BOOT_RESAMPLES,
            "bootstrap_seed": BOOT_SEED,
            "min_seeds_for_verdict": MIN_SEEDS_FOR_VERDICT,
            "passk_margin": PASSK_MARGIN,
            "entropy_tolerance": ENTROPY_TOLERANCE,
        },
        "base_pass_at_k": base_passk,
        "arms": arms,
        "claims": {
            "rollout_saving_vs_uniform": _saving_claims(arms),
            "passk_vs_base": _passk_claims(by_arm, base_passk),
            "entropy_held": _entropy_claims(arms),
        },
    }


# --------------------------------------------------------------------------- candidate testbeds


def candidate_properties(
    uniform: Sequence[dict], base_passk: dict[str, float], train_rates: Sequence[float]
) -> dict[str, Any]:
    """Section 1's four properties, measured on uniform GRPO's runs (seeds averaged), each
    against its declared threshold."""
    if not uniform:
        raise ValueError("no uniform runs to measure the candidate on")
    spread = pass_rate_spread(train_rates)
    shares = [late_gain_share(r["val_curve"]) for r in uniform]
    # on the seed-mean curve: one seed without a gain leaves its own share undefined, not the mean's
    late = late_gain_share(arms.mean_curve(list(uniform)))
    first = statistics.fmean(r["entropy_t1_head_tail"]["first"] for r in uniform)
    last = statistics.fmean(r["entropy_t1_head_tail"]["last"] for r in uniform)
    drop = 1.0 - last / first
    passk = {
        k: statistics.fmean(r["pass_at_k"][k] for r in uniform) - base_passk[k]
        for k in PASSK_COLLAPSE_KS
        if k in base_passk and all(k in r["pass_at_k"] for r in uniform)
    }
    seconds = statistics.median(r["step_seconds"] for r in uniform)
    props = {
        "spread": spread["below_0.1"] >= SPREAD_BELOW_MIN
        and spread["above_0.9"] >= SPREAD_ABOVE_MIN
        and spread["between"] >= SPREAD_BETWEEN_MIN,
        "long_curve": late is not None and late >= LATE_GAIN_SHARE_MIN,
        "collapse": drop >= ENTROPY_DROP_MIN and bool(passk) and min(passk.values()) < 0,
        "cheap": seconds <= STEP_SECONDS_MAX,
    }
    return {
        "seeds": sorted(int(r["seed"]) for r in uniform),
        "base_pass_rate_spread": spread,
        "uniform_late_gain_share": late,
        "uniform_late_gain_share_per_seed": shares,
        "uniform_entropy_drop": {"first10": first, "last10": last, "drop": drop},
        "uniform_passk_minus_base": passk,
        "step_seconds": seconds,
        "properties": props,
        "all_pass": all(props.values()),
        "thresholds": {
            "below_0.1": SPREAD_BELOW_MIN,
            "above_0.9": SPREAD_ABOVE_MIN,
            "between": SPREAD_BETWEEN_MIN,
            "late_gain_share": LATE_GAIN_SHARE_MIN,
            "entropy_drop": ENTROPY_DROP_MIN,
            "passk_minus_base": f"< 0 at pass@{' or pass@'.join(PASSK_COLLAPSE_KS)}",
            "step_seconds": STEP_SECONDS_MAX,
        },
    }
