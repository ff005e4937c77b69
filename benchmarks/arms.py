"""Side-by-side runs of the method's arms on the demo task, several seeds each.

    python benchmarks/arms.py --arms uniform,rank,value --seeds 0,1,2 --steps 200
    python benchmarks/arms.py --arms uniform,temp,temp_anneal --seeds 0,1,2 --out benchmarks/results/temperature

Each run is a fresh `e3rl train configs/demo.yaml ...` process (same cached base model, same
prompts, same rollouts per step). Writes `<out>/runs.json` (one record per run), `<out>/summary.md`
(mean ± std per arm) and a report with figures (`<out>/report/`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ARMS: dict[str, list[str]] = {
    "uniform": [],
    "entropy_bonus": ["algo.entropy_coef=0.01"],
    "rank": ["budget.allocator=rank", "budget.widen_every=25"],
    "value": ["budget.allocator=value", "budget.n_min=0", "budget.n_max=16"],
    "temp": ["rollout.temperature_control=entropy"],
    "temp_anneal": ["rollout.temperature_control=entropy", "temperature.anneal=true"],
    "paper": [
        "budget.allocator=rank",
        "budget.widen_every=25",
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
        "temperature.anneal=true",
    ],
}


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def run_arm(name: str, seed: int, steps: int, out: Path, extra: list[str]) -> dict:
    run = out / f"{name}-s{seed}"
    args = [
        sys.executable,
        "-m",
        "e3rl.cli",
        "train",
        "configs/demo.yaml",
        *ARMS[name],
        *extra,
        f"trainer.seed={seed}",
        f"trainer.total_steps={steps}",
        f"trainer.output_dir={run}",
        "trainer.save_every=0",
        "--quiet",
    ]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    for heavy in ("checkpoints", "final"):  # weights stay out of the results folder
        shutil.rmtree(run / heavy, ignore_errors=True)
    rows = _rows(run)
    val = [(r["step"], r["cum_rollouts"], r["val_accuracy"]) for r in rows if "val_accuracy" in r]
    summary = json.loads((run / "summary.json").read_text())
    after = rows[len(rows) // 4 :]  # past the controller's warm-up
    return {
        "arm": name,
        "seed": seed,
        "steps": steps,
        "wall_seconds": time.perf_counter() - t0,
        "base_val_accuracy": summary["base_val_accuracy"],
        "final_val_accuracy": summary["final_val_accuracy"],
        "val_curve": val,
        "rollouts": summary["rollouts"],
        "tokens": summary["tokens"],
        "mean_frac_all_wrong": statistics.mean(r["frac_all_wrong"] for r in rows),
        "mean_frac_all_correct": statistics.mean(r["frac_all_correct"] for r in rows),
        "mean_frac_mixed": statistics.mean(r["frac_mixed"] for r in rows),
        "entropy_first": rows[0]["entropy"],
        "entropy_last": rows[-1]["entropy"],
        "target_entropy": rows[-1].get("target_entropy"),
        "entropy_rel_dev": (
            statistics.mean(
                abs(r["entropy"] / r["target_entropy"] - 1)
                for r in after
                if r.get("target_entropy")
            )
            if any(r.get("target_entropy") for r in after)
            else None
        ),
        "temperature_last": rows[-1]["temperature"],
        "run_dir": str(run),
    }


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def summarize(records: list[dict]) -> str:
    lines = [
        "| arm | runs | base val acc | final val acc | gain (points) | all-wrong | "
        "all-correct | mixed | entropy first → last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in dict.fromkeys(r["arm"] for r in records):
        rs = [r for r in records if r["arm"] == arm]
        gain = [100 * (r["final_val_accuracy"] - r["base_val_accuracy"]) for r in rs]
        lines.append(
            f"| {arm} | {len(rs)} | {_ms([r['base_val_accuracy'] for r in rs])} | "
            f"{_ms([r['final_val_accuracy'] for r in rs])} | {_ms(gain).replace('.000', '')} | "
            f"{_ms([r['mean_frac_all_wrong'] for r in rs])} | "
            f"{_ms([r['mean_frac_all_correct'] for r in rs])} | "
            f"{_ms([r['mean_frac_mixed'] for r in rs])} | "
            f"{statistics.mean(r['entropy_first'] for r in rs):.3f} → "
            f"{statistics.mean(r['entropy_last'] for r in rs):.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arms", default="uniform,rank,value")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default="benchmarks/results/allocators")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for arm in a.arms.split(","):  # arms alternate inside a seed: drift hits all alike
            rec = run_arm(arm, seed, a.steps, out, a.overrides)
            records.append(rec)
            print(
                f"{arm} seed {seed}: val {rec['base_val_accuracy']:.3f} -> "
                f"{rec['final_val_accuracy']:.3f}, all-wrong {rec['mean_frac_all_wrong']:.2f}, "
                f"{rec['wall_seconds']:.0f} s",
                flush=True,
            )
            (out / "runs.json").write_text(json.dumps(records, indent=1))
    table = summarize(records)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    from e3rl.report import make_report

    make_report([r["run_dir"] for r in records if r["seed"] == records[0]["seed"]], out / "report")


if __name__ == "__main__":
    main()
