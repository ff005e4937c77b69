"""Learning efficiency: the method's arms side by side on the arith task, several seeds each.

    python benchmarks/arms.py                      # the full suite: 10 arms x 3 seeds, 300 steps
    python benchmarks/arms.py --quick              # uniform vs value, 1 seed, 100 steps (minutes)
    python benchmarks/arms.py --arms uniform,temp,temp_anneal --out benchmarks/results/temperature

Every run is a fresh `e3rl train configs/demo.yaml ...` process with the same base model (one warm
start, `model.warm_start.seed` fixed), the same prompts and the same 128 rollouts per step; only
the arm's overrides and `trainer.seed` differ. RL uses the first 800 of the demo's 4,000 training
prompts (50 steps an epoch) so that every prompt comes back six times: difficulty is tracked per prompt, and in a single
epoch nothing is known about any prompt when it is drawn.

After training, each final model and the base model get `e3rl eval` with 16 samples per held-out
prompt at temperature 1 (pass@1..16). Run directories go to `runs/bench/<out name>/`; the
results folder gets `runs.json` (one record per run, compact curves), `summary.md` (mean ± std per
arm, rollouts to reach the baseline) and figures (`report/`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIG = "configs/demo.yaml"
# Shared by every run of the suite (and by the base model's evaluation).
COMMON = ["data.train_limit=800", "model.warm_start.seed=0", "trainer.eval_every=25"]
PASS_K = (1, 2, 4, 8, 16)

ARMS: dict[str, list[str]] = {
    "uniform": [],
    "entropy_bonus": ["algo.entropy_coef=0.01"],
    "rank": ["budget.allocator=rank"],
    "value": ["budget.allocator=value", "budget.n_min=0", "budget.n_max=16"],
    # value with Knapsack-RL's worth of a group, P(mixed) x p(1-p)^2, instead of P(mixed)
    "knapsack": [
        "budget.allocator=value",
        "budget.n_min=0",
        "budget.n_max=16",
        "budget.value_objective=knapsack",
    ],
    "temp": ["rollout.temperature_control=entropy"],
    "temp_anneal": ["rollout.temperature_control=entropy", "temperature.anneal=true"],
    "paper": [
        "budget.allocator=rank",
        "budget.rank_refresh=epoch",
        "rollout.temperature_control=entropy",
        "temperature.anneal=true",
        "reward.length_bias.mu=1e-3",
    ],
    "e3rl": [
        "budget.allocator=value",
        "budget.n_min=0",
        "budget.n_max=16",
        "rollout.temperature_control=entropy",
        # the target from 10 steps' mean entropy, not from one noisy step (see README)
        "temperature.warmup_steps=10",
        "temperature.anneal=true",
    ],
    # e3rl with the knapsack objective for the value allocator
    "e3rl_knapsack": [
        "budget.allocator=value",
        "budget.n_min=0",
        "budget.n_max=16",
        "budget.value_objective=knapsack",
        "rollout.temperature_control=entropy",
        "temperature.warmup_steps=10",
        "temperature.anneal=true",
    ],
}


def _cli(*args: str, threads: int) -> None:
    env_threads = [f"trainer.threads={threads}"]
    cmd = [sys.executable, "-m", "e3rl.cli", *args, *env_threads]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _pass_at_k(
    model: str,
    out_dir: Path,
    n: int,
    extra: list[str],
    threads: int,
    config: str = CONFIG,
    common: list[str] = COMMON,
    data: str = "arith:val",
    pass_k: tuple[int, ...] = PASS_K,
) -> dict:
    """Greedy accuracy and pass@k (k <= n) of `model` from `e3rl eval` at temperature 1
    (benchmarks/testbed.py passes its own config, data and k)."""
    ks = ",".join(str(k) for k in pass_k if k <= n)
    _cli(
        "eval",
        model,
        "--config",
        config,
        "--data",
        data,
        "--n",
        str(n),
        "--k",
        ks,
        "--temperature",
        "1.0",
        "--output-dir",
        str(out_dir),
        *common,
        *extra,
        threads=threads,
    )
    res = json.loads((out_dir / "eval.json").read_text())
    return {"greedy": res["greedy_accuracy"], **res.get("pass_at_k", {})}


def _series(rows: list[dict], key: str, every: int = 5) -> list:
    return [round(r[key], 4) if r.get(key) is not None else None for r in rows[::every]]


def run_arm(
    name: str, seed: int, steps: int, runs: Path, extra: list[str], pass_n: int, threads: int
) -> dict:
    run = runs / f"{name}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    _cli(
        "train",
        CONFIG,
        *COMMON,
        *ARMS[name],
        *extra,
        f"trainer.seed={seed}",
        f"trainer.total_steps={steps}",
        f"trainer.output_dir={run}",
        "trainer.save_every=0",
        "--quiet",
        threads=threads,
    )
    wall = time.perf_counter() - t0
    passk = _pass_at_k(str(run / "final"), run, pass_n, extra, threads) if pass_n else {}
    for heavy in ("checkpoints", "final"):
        shutil.rmtree(run / heavy, ignore_errors=True)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    return {
        "arm": name,
        "seed": seed,
        "steps": steps,
        "overrides": ARMS[name] + extra,
        "wall_seconds": wall,  # not a benchmark figure: runs share the cores
        "base_val_accuracy": summary["base_val_accuracy"],
        "final_val_accuracy": summary["final_val_accuracy"],
        "val_curve": [[0, 0, summary["base_val_accuracy"]]]
        + [[r["step"], r["cum_rollouts"], r["val_accuracy"]] for r in rows if "val_accuracy" in r],
        "rollouts": summary["rollouts"],
        "tokens": summary["tokens"],
        "pass_at_k": passk,
        "mean_frac_all_wrong": statistics.mean(r["frac_all_wrong"] for r in rows),
        "mean_frac_all_correct": statistics.mean(r["frac_all_correct"] for r in rows),
        "mean_frac_mixed": statistics.mean(r["frac_mixed"] for r in rows),
        # the same weighted by rollouts: the share of the budget with / without a signal
        **{
            f"mean_frac_rollouts_{k}": statistics.mean(r[f"frac_rollouts_{k}"] for r in rows)
            for k in ("all_wrong", "all_correct", "mixed")
        },
        "entropy_tracking": entropy_tracking(rows),
        "series_every": 5,
        "entropy": _series(rows, "entropy"),
        "entropy_t1": _series(rows, "entropy_t1"),
        "target_entropy": _series(rows, "target_entropy"),
        "temperature": _series(rows, "temperature"),
        "frac_all_wrong": _series(rows, "frac_all_wrong"),
        "frac_rollouts_mixed": _series(rows, "frac_rollouts_mixed"),
        "cum_tokens": _series(rows, "cum_tokens"),
        "run_dir": str(run),
    }


def entropy_tracking(rows: list[dict], window: int = 10) -> dict | None:
    """How well the sampling entropy H followed its target H* after the controller's warm-up:
    the mean of H/H* - 1 (drift, signed), and the mean |H/H* - 1| per step and over a rolling
    `window`-step mean (one step's entropy is noisy, so the per-step figure is mostly that
    noise)."""
    import numpy as np

    on = [r for r in rows if r.get("target_entropy")]
    if len(on) < window:
        return None
    ratio = np.array([r["entropy"] / r["target_entropy"] for r in on])
    rolling = np.convolve(ratio, np.ones(window) / window, "valid")
    return {
        "drift": float(ratio.mean() - 1),
        "per_step_abs_dev": float(np.abs(ratio - 1).mean()),
        f"rolling{window}_abs_dev": float(np.abs(rolling - 1).mean()),
        f"rolling{window}_max_abs_dev": float(np.abs(rolling - 1).max()),
    }


def rollouts_to_reach(curve: list[list[float]], target: float) -> float | None:
    """Cumulative rollouts at which a validation curve first reaches `target` (linear between
    validation points); None if it never does."""
    if curve and curve[0][2] >= target:
        return curve[0][1]
    for (_, r0, a0), (_, r1, a1) in zip(curve, curve[1:], strict=False):
        if a1 >= target:
            return r1 if a1 == a0 else r0 + (r1 - r0) * max(0.0, (target - a0) / (a1 - a0))
    return None


def mean_curve(records: list[dict]) -> list[list[float]]:
    """Validation curve averaged over seeds (all runs of an arm validate at the same steps)."""
    curves = [r["val_curve"] for r in records]
    n = min(len(c) for c in curves)
    return [
        [curves[0][i][0], curves[0][i][1], statistics.mean(c[i][2] for c in curves)]
        for i in range(n)
    ]


def _ms(values: list[float], fmt: str = ".3f") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], fmt)
    spread = format(statistics.stdev(values), fmt.lstrip("+"))
    return f"{format(statistics.mean(values), fmt)} ± {spread}"


def late_accuracy(curve: list) -> float:
    """Mean validation accuracy over the last two thirds of a run: the plateau's level, far less
    noisy than its last point (one validation of 300 prompts has a standard error of ~0.03)."""
    last = curve[-1][0]
    return statistics.mean(acc for step, _, acc in curve if step > last / 3)


def summarize(records: list[dict], base_passk: dict, baseline: str = "uniform") -> dict:
    """Per arm: means, stds and the rollouts needed to reach the baseline's final accuracy."""
    arms = list(dict.fromkeys(r["arm"] for r in records))
    by_arm = {a: [r for r in records if r["arm"] == a] for a in arms}
    base_runs = by_arm.get(baseline, [])
    target = statistics.mean(r["final_val_accuracy"] for r in base_runs) if base_runs else None
    base_total = statistics.mean(r["rollouts"] for r in base_runs) if base_runs else None
    out = {
        "baseline": baseline,
        "target_accuracy": target,
        "base_pass_at_k": base_passk,
        "arms": {},
    }
    for arm, rs in by_arm.items():
        reach = rollouts_to_reach(mean_curve(rs), target) if target is not None else None
        out["arms"][arm] = {
            "runs": len(rs),
            "final_val_accuracy": [r["final_val_accuracy"] for r in rs],
            "late_val_accuracy": [late_accuracy(r["val_curve"]) for r in rs],
            "gain_points": [100 * (r["final_val_accuracy"] - r["base_val_accuracy"]) for r in rs],
            "rollouts": statistics.mean(r["rollouts"] for r in rs),
            "tokens": statistics.mean(r["tokens"] for r in rs),
            "rollouts_to_baseline_final": reach,
            "rollout_ratio_to_baseline": reach / base_total if reach and base_total else None,
            "per_seed_rollouts_to_baseline_final": [
                rollouts_to_reach(r["val_curve"], target) for r in rs
            ],
            "frac_all_wrong": [r["mean_frac_all_wrong"] for r in rs],
            "frac_all_correct": [r["mean_frac_all_correct"] for r in rs],
            "frac_mixed": [r["mean_frac_mixed"] for r in rs],
            **{
                f"frac_rollouts_{k}": [r[f"mean_frac_rollouts_{k}"] for r in rs]
                for k in ("all_wrong", "all_correct", "mixed")
            },
            "entropy_drift": [
                r["entropy_tracking"]["drift"] for r in rs if r.get("entropy_tracking")
            ],
            "entropy_rolling10_abs_dev": [
                r["entropy_tracking"]["rolling10_abs_dev"] for r in rs if r.get("entropy_tracking")
            ],
            "pass_at_k": {
                k: [r["pass_at_k"][k] for r in rs if k in r["pass_at_k"]]
                for k in (rs[0]["pass_at_k"] or {})
            },
        }
    return out


def to_markdown(s: dict) -> str:
    ks = [k for k in next(iter(s["arms"].values()))["pass_at_k"] if k.isdigit()]
    head = [
        "arm",
        "runs",
        "final val acc",
        "val acc, last 2/3 mean",
        "gain (points)",
        "rollouts to baseline final (ratio)",
        "rollouts in all-wrong groups",
        "in all-correct",
        "in mixed",
        "entropy vs target: drift / 10-step dev",
        *(f"pass@{k}" for k in ks),
    ]
    rows = [head, ["---"] * len(head)]
    if s["base_pass_at_k"] and ks:
        bp = s["base_pass_at_k"]
        rows.append(
            ["base model", "–", f"{bp['greedy']:.3f}", *["–"] * 7]
            + [f"{bp[k]:.3f}" if k in bp else "—" for k in ks]
        )
    for arm, a in s["arms"].items():
        reach = a["rollouts_to_baseline_final"]
        ratio = a["rollout_ratio_to_baseline"]
        dev = (
            f"{_ms(a['entropy_drift'], '+.1%')} / {_ms(a['entropy_rolling10_abs_dev'], '.1%')}"
            if a["entropy_drift"]
            else "—"
        )
        rows.append(
            [
                arm,
                str(a["runs"]),
                _ms(a["final_val_accuracy"]),
                _ms(a.get("late_val_accuracy", [])),
                _ms(a["gain_points"], ".1f"),
                f"{reach:,.0f} ({ratio:.2f})" if reach else "not reached",
                _ms(a["frac_rollouts_all_wrong"], ".2f"),
                _ms(a["frac_rollouts_all_correct"], ".2f"),
                _ms(a["frac_rollouts_mixed"], ".2f"),
                dev,
                *(_ms(a["pass_at_k"].get(k, []), ".3f") for k in ks),
            ]
        )
    return (
        f"Baseline: `{s['baseline']}`, final validation accuracy (mean over seeds) "
        f"{s['target_accuracy']:.3f}. 'Rollouts to baseline final' reads the seed-averaged "
        "validation curve (linear between validation points); the ratio is to the baseline's "
        "total rollouts. 'Last 2/3 mean' averages each run's validation points after the first "
        "third of its steps.\n\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows) + "\n"
    )


def _smooth5(x, y):
    """A centred 5-point mean of y and the x it belongs to; a series shorter than 5 points (a
    few-step smoke run) is drawn as it is."""
    import numpy as np

    if len(y) < 5:
        return x, y
    return x[2:-2], np.convolve(y, np.ones(5) / 5, "valid")


def plot_suite(records: list[dict], summary: dict, path: Path) -> None:
    """One figure of the whole suite, seeds averaged: accuracy against rollouts, pass@k, the
    share of rollouts that carry a learning signal and the entropy against its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = list(summary["arms"])
    colors = dict(zip(arms, plt.cm.tab10.colors, strict=False))
    fig, ax = plt.subplots(1, 4, figsize=(22, 4.8))
    for arm in arms:
        rs = [r for r in records if r["arm"] == arm]
        curve = np.array(mean_curve(rs))
        acc = np.array([[p[2] for p in r["val_curve"][: len(curve)]] for r in rs])
        ax[0].plot(curve[:, 1], curve[:, 2], color=colors[arm], label=arm)
        if len(rs) > 1:
            sd = acc.std(axis=0, ddof=1)
            ax[0].fill_between(
                curve[:, 1], curve[:, 2] - sd, curve[:, 2] + sd, color=colors[arm], alpha=0.12
            )
        pk = summary["arms"][arm]["pass_at_k"]
        ks = [k for k in pk if k.isdigit() and pk[k]]
        if ks:
            ax[1].plot(
                [int(k) for k in ks],
                [np.mean(pk[k]) for k in ks],
                "o-",
                color=colors[arm],
                label=arm,
            )
        every = rs[0]["series_every"]
        mixed = np.array([r["frac_rollouts_mixed"] for r in rs], dtype=float).mean(axis=0)
        steps = np.arange(len(mixed)) * every + 1
        ax[2].plot(*_smooth5(steps, mixed), color=colors[arm], label=arm)
        ent = np.array([r["entropy"] for r in rs], dtype=float).mean(axis=0)
        if rs[0]["target_entropy"][-1] is not None:
            tgt = np.array([r["target_entropy"] for r in rs], dtype=float).mean(axis=0)
            ax[3].plot(*_smooth5(steps, ent), color=colors[arm], label=f"{arm} entropy")
            ax[3].plot(steps, tgt, "--", color=colors[arm], label=f"{arm} target")
        else:
            ax[3].plot(
                *_smooth5(steps, ent), color=colors[arm], alpha=0.5, lw=1, label=f"{arm} entropy"
            )
    if summary["target_accuracy"] is not None:
        ax[0].axhline(
            summary["target_accuracy"], color="grey", ls=":", lw=1, label="baseline final"
        )
    bp = summary["base_pass_at_k"]
    ks = [k for k in bp if k.isdigit()]
    if ks:
        ax[1].plot([int(k) for k in ks], [bp[k] for k in ks], "k^--", label="base model")
    ax[1].set_xscale("log", base=2)
    titles = [
        ("validation accuracy (greedy, mean ± std over seeds)", "cumulative rollouts"),
        ("pass@k at temperature 1 on held-out prompts", "k"),
        ("share of rollouts in mixed groups (a learning signal)", "step"),
        ("sampling entropy (5-point mean) and its target", "step"),
    ]
    for a, (title, xl) in zip(ax, titles, strict=True):
        a.set_title(title, fontsize=10)
        a.set_xlabel(xl)
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:  # empty panels (no pass@k, no temperature control)
            a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--pass-n", type=int, default=16, help="samples per prompt for pass@k (0 = off)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 torch thread each)")
    p.add_argument("--out", default="benchmarks/results/arms")
    p.add_argument("--quick", action="store_true", help="uniform vs value, seed 0, 100 steps")
    p.add_argument("--runs-dir", help="where run directories go (default runs/bench/<out name>)")
    p.add_argument("--resume", action="store_true", help="keep runs.json's records, run the rest")
    p.add_argument(
        "--summarize", action="store_true", help="rebuild summary/figures from runs.json"
    )
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    a = p.parse_args()
    if a.quick:
        a.arms, a.seeds, a.steps, a.out = "uniform,value", "0", 100, a.out + "-quick"
    out = Path(a.out)
    runs = Path(a.runs_dir or Path("runs/bench") / out.name)
    out.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    if a.summarize:
        finish(json.loads((out / "runs.json").read_text()), runs, out)
        return
    threads = max(1, 2 // a.jobs)
    # The base model is built (warm start, cached) once before anything runs in parallel.
    if a.pass_n and not (runs / "base-eval" / "eval.json").is_file():
        _pass_at_k("task", runs / "base-eval", a.pass_n, a.overrides, 1)
    jobs = [(arm, int(s)) for s in a.seeds.split(",") for arm in a.arms.split(",")]
    records: list[dict] = []
    if a.resume and (out / "runs.json").is_file():
        records = json.loads((out / "runs.json").read_text())
        done = {(r["arm"], r["seed"]) for r in records}
        jobs = [j for j in jobs if j not in done]

    def one(job: tuple[str, int]) -> dict:
        rec = run_arm(*job, a.steps, runs, a.overrides, a.pass_n, threads)
        print(
            f"{rec['arm']} seed {rec['seed']}: val {rec['base_val_accuracy']:.3f} -> "
            f"{rec['final_val_accuracy']:.3f}, all-wrong {rec['mean_frac_all_wrong']:.2f}, "
            f"pass@16 {rec['pass_at_k'].get('16', float('nan')):.3f}",
            flush=True,
        )
        return rec

    with ThreadPoolExecutor(a.jobs) as pool:
        for rec in pool.map(one, jobs):
            records.append(rec)
            (out / "runs.json").write_text(json.dumps(records, indent=1))
    finish(records, runs, out)


def finish(records: list[dict], runs: Path, out: Path) -> None:
    for r in records:  # recomputed from the run's log where it is at hand
        log = Path(r["run_dir"]) / "metrics.jsonl"
        if log.is_file():
            rows = [json.loads(x) for x in log.read_text().splitlines()]
            r["entropy_tracking"] = entropy_tracking(rows)
    (out / "runs.json").write_text(json.dumps(records, indent=1))
    base, previous = runs / "base-eval" / "eval.json", out / "summary.json"
    if base.is_file():
        res = json.loads(base.read_text())
        base_passk = {"greedy": res["greedy_accuracy"], **res["pass_at_k"]}
    else:  # the run directories are gone: keep what the last summary measured
        base_passk = (
            json.loads(previous.read_text())["base_pass_at_k"] if previous.is_file() else {}
        )
    summary = summarize(records, base_passk)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(to_markdown(summary))
    print(to_markdown(summary))
    plot_suite(records, summary, out / "suite.png")
    from e3rl.report import make_report

    first_seed = [r["run_dir"] for r in records if r["seed"] == records[0]["seed"]]
    if all(Path(d).is_dir() for d in first_seed):
        make_report(first_seed, out / "report")
    else:
        print("run directories not at hand: report/ left as it is")


if __name__ == "__main__":
    main()
