"""Paired differences of one testbed arm against uniform, per seed, from a suite's records.

    PYTHONPATH=src .venv/bin/python benchmarks/testbed_paired.py benchmarks/results/testbed/intel-xeon entropy_bonus

Final pass@1 (mean of the last 3 validation points), AUC, pass@64, the T=1 entropy drop (first
against last 10 steps) and the share of rollouts in mixed groups: the arm's and uniform's means
over their common seeds, and the paired difference with its 95 % bootstrap interval
(testbed_stats.bootstrap_mean, as summary.json); the rollouts a run spent (an arm with
`budget.skip_below` spends fewer) as the paired ratio to uniform's, and the arm's final pass@1
against uniform's curve at the same rollouts (interpolated at the arm's last 3 validations).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import testbed_stats as S

STATS = {
    "final pass@1": lambda r: S.smoothed_final(r["val_curve"]),
    "AUC": lambda r: S.area_under_curve(r["val_curve"]),
    "pass@64": lambda r: r["pass_at_k"]["64"],
    "T=1 entropy drop": lambda r: r["entropy_t1_head_tail"]["drop"],
    "rollouts in mixed groups": lambda r: r["mean_frac_rollouts_mixed"],
}


RATIOS = {"rollouts spent": lambda r: r["rollouts"]}


def at_equal_rollouts(mine: dict, uniform: dict) -> float:
    """The arm's smoothed final pass@1 minus uniform's curve at the same cumulative rollouts."""
    last = mine["val_curve"][-S.SMOOTH_POINTS :]
    ux, uy = zip(*((p[1], p[2]) for p in uniform["val_curve"]), strict=True)
    return S.smoothed_final(mine["val_curve"]) - float(
        np.mean([np.interp(p[1], ux, uy) for p in last])
    )


def records(out: Path, arm: str) -> dict[int, dict]:
    found = {}
    for f in sorted((out / "runs").glob(f"{arm}-s*.json")):
        r = json.loads(f.read_text())
        found[r["seed"]] = r
    if not found:
        raise SystemExit(f"{out}/runs holds no records of arm {arm!r}")
    return found


def paired(out: Path, arm: str) -> dict:
    mine, uniform = records(out, arm), records(out, "uniform")
    seeds = sorted(set(mine) & set(uniform))
    result = {"seeds": seeds}
    for name, f in STATS.items():
        result[name] = {
            "uniform": sum(f(uniform[s]) for s in seeds) / len(seeds),
            arm: sum(f(mine[s]) for s in seeds) / len(seeds),
            "difference": S.bootstrap_mean([f(mine[s]) - f(uniform[s]) for s in seeds]),
        }
    for name, f in RATIOS.items():
        result[name] = {"ratio": S.bootstrap_mean([f(mine[s]) / f(uniform[s]) for s in seeds])}
    result["final pass@1 at equal rollouts"] = {
        "difference": S.bootstrap_mean([at_equal_rollouts(mine[s], uniform[s]) for s in seeds])
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a suite's out dir (its runs/ holds the records)")
    ap.add_argument("arm")
    a = ap.parse_args()
    res = paired(a.out, a.arm)
    print(f"seeds {res['seeds']}")
    for name in STATS:
        r, d = res[name], res[name]["difference"]
        lo, hi = d["ci95"]
        print(
            f"{name}: uniform {r['uniform']:.3f}, {a.arm} {r[a.arm]:.3f}, "
            f"difference {d['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        )
    for name in RATIOS:
        d = res[name]["ratio"]
        print(f"{name}: {a.arm} / uniform {d['mean']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]")
    d = res["final pass@1 at equal rollouts"]["difference"]
    print(
        f"final pass@1 at equal rollouts: {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
    )
    (a.out / f"paired-{a.arm}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
