"""Selection before rollout (issue 16): offering more candidates than are rolled, same budget.

    python benchmarks/selection.py                       # the arms below, seed 0, 60 steps
    python benchmarks/selection.py --arms uniform,value_rollouts_c32 --seeds 0,1 --steps 150

Every run is `e3rl train configs/demo.yaml` with the short-epoch arms' data (the first 160
training prompts: 10 uniform steps an epoch, so prompts come back and have a history to select
by) and the arms suite's warm-started base model, 16 prompts x 8 rollouts = 128 rollouts per
step, one thread per run and one run at a time; validation before and after. Per run it records the share of rollouts in mixed
groups over the run (measured), what the tracker's posteriors expected of the counts planned and
of uniform's 8 each, prompts rolled / skipped, the time spent choosing (``time_plan``: drawing
candidates and allocating) as a share of the step's time, and the validation accuracy.
Results: ``benchmarks/results/selection/runs.json`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIG = "configs/demo.yaml"
COMMON = [
    "data.train_limit=160",
    "model.warm_start.seed=0",
    "trainer.eval_every=0",
    "trainer.threads=1",
    "trainer.save_every=0",
]
VALUE = ["budget.allocator=value", "budget.n_min=0", "budget.n_max=16"]
ROLLOUTS = ["budget.value_objective=mixed_rollouts"]
ARMS: dict[str, list[str]] = {
    "uniform": [],
    "uniform_c32": ["data.candidates_per_step=32"],
    "value": VALUE,
    "value_rollouts": [*VALUE, *ROLLOUTS],
    "value_c32": [*VALUE, "data.candidates_per_step=32"],
    "value_rollouts_c32": [*VALUE, *ROLLOUTS, "data.candidates_per_step=32"],
    "value_rollouts_c48": [*VALUE, *ROLLOUTS, "data.candidates_per_step=48"],
}
TIMES = ("time_plan", "time_generate", "time_reward", "time_update")


def run_arm(arm: str, seed: int, steps: int, root: Path) -> dict:
    out = root / f"{arm}-s{seed}"
    if not (out / "summary.json").is_file():
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        cmd = [
            sys.executable,
            "-m",
            "e3rl.cli",
            "train",
            CONFIG,
            *COMMON,
            *ARMS[arm],
            f"trainer.seed={seed}",
            f"trainer.total_steps={steps}",
            f"trainer.output_dir={out}",
            "--quiet",
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"{arm} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    totals = {k: sum(r.get(k, 0.0) for r in rows) for k in TIMES}
    return {
        "arm": arm,
        "seed": seed,
        "steps": len(rows),
        "overrides": ARMS[arm],
        "rollouts": summary["rollouts"],
        "frac_rollouts_mixed": summary["frac_rollouts_mixed"],
        "exp_frac_rollouts_mixed": summary["exp_frac_rollouts_mixed"],
        "exp_frac_rollouts_mixed_uniform": summary["exp_frac_rollouts_mixed_uniform"],
        "frac_rollouts_all_correct": statistics.fmean(r["frac_rollouts_all_correct"] for r in rows),
        "frac_rollouts_all_wrong": statistics.fmean(r["frac_rollouts_all_wrong"] for r in rows),
        "prompts_rolled": summary["prompts_rolled"],
        "prompts_skipped": summary["prompts_skipped"],
        "plan_time_share": totals["time_plan"] / sum(totals.values()),
        "plan_ms_per_step": 1000 * totals["time_plan"] / len(rows),
        "base_val_accuracy": summary["base_val_accuracy"],
        "final_val_accuracy": summary["final_val_accuracy"],
        "val_curve": [[r["step"], r["val_accuracy"]] for r in rows if "val_accuracy" in r],
        "wall_seconds": summary["wall_seconds"],
    }


def table(records: list[dict]) -> str:
    head = (
        "| arm | seed | rollouts in mixed groups (measured) | expected: planned / uniform | "
        "all-correct / all-wrong | prompts rolled / skipped | plan time share (ms/step) | "
        "final val acc |"
    )
    lines = [head, "| " + " | ".join(["---"] * 8) + " |"]
    for r in records:
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['frac_rollouts_mixed']:.3f} | "
            f"{r['exp_frac_rollouts_mixed']:.3f} / {r['exp_frac_rollouts_mixed_uniform']:.3f} | "
            f"{r['frac_rollouts_all_correct']:.3f} / {r['frac_rollouts_all_wrong']:.3f} | "
            f"{r['prompts_rolled']} / {r['prompts_skipped']} | "
            f"{100 * r['plan_time_share']:.2f} % ({r['plan_ms_per_step']:.1f}) | "
            f"{r['final_val_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--runs", default="runs/bench/selection")
    ap.add_argument("--out", default="benchmarks/results/selection")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):
            records.append(run_arm(arm, seed, args.steps, root))
            (out / "runs.json").write_text(json.dumps(records, indent=1))
    cmd = " ".join(["python", "benchmarks/selection.py", *sys.argv[1:]])
    (out / "summary.md").write_text(f"`{cmd}`, {args.steps} steps\n\n{table(records)}\n")
    print(table(records))


if __name__ == "__main__":
    main()
