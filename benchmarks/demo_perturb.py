"""The demo under perturbations that stand in for other machines (docs/demo.md).

    python benchmarks/demo_perturb.py                       # 3 seeds x threads 1,2 x avx512,avx2
    python benchmarks/demo_perturb.py --resume              # keep finished runs, run the rest
    python benchmarks/demo_perturb.py --baseline            # uniform GRPO beside each run too
    python benchmarks/demo_perturb.py --baseline-for seed0-t2-default   # ... beside some runs

Each run is a fresh `e3rl demo` process (the method arm, `--no-baseline` unless --baseline) with
its own empty E3RL_CACHE, `trainer.seed` and `trainer.threads` set, and ATEN_CPU_CAPABILITY set
(or not: "default" = what torch picks on this CPU). The base is the one the demo uses (shipped).
Peak resident memory comes from /usr/bin/time -v. Results: `runs.json` (one record per run) and
`table.md` in --out; run directories in --runs-dir.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_GAIN = 0.10  # what every run must reach (the target, declared in docs/demo.md)


def run_one(seed: int, threads: int, cap: str, runs_dir: Path, baseline: bool) -> dict:
    name = f"seed{seed}-t{threads}-{cap}"
    out = runs_dir / name
    if out.exists():
        import shutil

        shutil.rmtree(out)  # an unfinished earlier attempt: rerun from scratch
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("ATEN_CPU_CAPABILITY", None)
    if cap != "default":
        env["ATEN_CPU_CAPABILITY"] = cap
    with tempfile.TemporaryDirectory(prefix="e3rl-empty-cache-") as cache:
        env["E3RL_CACHE"] = cache
        cmd = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "e3rl.cli",
            "demo",
            "--quiet",
            "--output-dir",
            str(out),
            f"trainer.seed={seed}",
            f"trainer.threads={threads}",
        ]
        if not baseline:
            cmd.insert(cmd.index("--quiet"), "--no-baseline")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    (runs_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    s = json.loads((out / "summary.json").read_text())
    m = s["arms"]["e3rl"]
    rec = {
        "name": name,
        "seed": seed,
        "threads": threads,
        "capability_requested": cap,
        "capability": s["environment"]["torch_cpu_capability"],
        "cpu": s["environment"]["cpu"],
        "base_source": s["base_model"]["source"],
        "base": s["base_val_accuracy"],
        "final": s["final_val_accuracy"],
        "gain": s["final_val_accuracy"] - s["base_val_accuracy"],
        "val_prompts": s["val_prompts"],
        "rollouts": s["rollouts"],
        "frac_rollouts_mixed": m["frac_rollouts_mixed"],
        "entropy_last_50": m["entropy_last_50"],
        "target_entropy_last_50": m["target_entropy_last_50"],
        "response_length_first_50": m["response_length_first_50"],
        "response_length_last_50": m["response_length_last_50"],
        "val_curve": m["val_curve"],
        "peak_rss_mb": int(rss.group(1)) / 1024 if rss else None,
        "wall_seconds": round(wall, 1),
    }
    if s.get("baseline"):
        u = s["baseline"]
        rec["uniform_final"] = u["final_val_accuracy"]
        rec["uniform_gain"] = u["final_val_accuracy"] - u["base_val_accuracy"]
        rec["uniform_frac_rollouts_mixed"] = u["frac_rollouts_mixed"]
    return rec


def to_markdown(records: list[dict]) -> str:
    cols = ["seed", "threads", "capability", "base", "final", "gain", "mixed", "peak RSS MB"]
    has_u = any("uniform_final" in r for r in records)
    if has_u:
        cols += ["uniform final", "uniform gain"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    for r in sorted(records, key=lambda r: (r["capability"], r["threads"], r["seed"])):
        cells = [
            str(r["seed"]),
            str(r["threads"]),
            r["capability"],
            f"{r['base']:.3f}",
            f"{r['final']:.3f}",
            f"{r['gain'] * 100:+.1f}",
            f"{r['frac_rollouts_mixed']:.3f}",
            f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "—",
        ]
        if has_u:
            cells += [
                f"{r['uniform_final']:.3f}" if "uniform_final" in r else "—",
                f"{r['uniform_gain'] * 100:+.1f}" if "uniform_gain" in r else "—",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    gains = [r["gain"] for r in records]
    finals = [r["final"] for r in records]
    n_ok = sum(g >= TARGET_GAIN for g in gains)
    lines += [
        "",
        f"{len(records)} runs on {records[0]['cpu']}; base {min(r['base'] for r in records):.3f}"
        f"-{max(r['base'] for r in records):.3f}; final {min(finals):.3f}-{max(finals):.3f} "
        f"(mean {sum(finals) / len(finals):.3f}); gain min {min(gains) * 100:+.1f}, mean "
        f"{sum(gains) / len(gains) * 100:+.1f}, max {max(gains) * 100:+.1f} points; "
        f"{n_ok}/{len(records)} reach the target (+{TARGET_GAIN * 100:.0f} points); peak RSS max "
        f"{max(r['peak_rss_mb'] or 0 for r in records):.0f} MB.",
    ]
    if has_u:
        ug = [r["uniform_gain"] for r in records if "uniform_gain" in r]
        lines.append(
            f"Uniform GRPO from the same base ({len(ug)} runs): gain min {min(ug) * 100:+.1f}, "
            f"mean {sum(ug) / len(ug) * 100:+.1f}, max {max(ug) * 100:+.1f} points."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--caps", default="default,avx2")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    p.add_argument("--baseline", action="store_true", help="uniform GRPO beside each run")
    p.add_argument(
        "--baseline-for",
        default="",
        help="run names (e.g. seed0-t2-default) that get uniform GRPO too",
    )
    p.add_argument("--resume", action="store_true", help="keep runs.json's records, run the rest")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/demo")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs/perturb")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    results = args.out / "runs.json"
    records = json.loads(results.read_text()) if args.resume and results.is_file() else []
    done = {r["name"] for r in records}
    jobs = [
        (s, t, c)
        # seed-major: each early wave already spans threads and capabilities
        for s, c, t in itertools.product(
            map(int, args.seeds.split(",")), args.caps.split(","), map(int, args.threads.split(","))
        )
        if f"seed{s}-t{t}-{c}" not in done
    ]

    def one(job: tuple[int, int, str]) -> dict:
        s, t, c = job
        with_baseline = args.baseline or f"seed{s}-t{t}-{c}" in args.baseline_for.split(",")
        rec = run_one(*job, args.runs_dir, with_baseline)
        print(
            f"{rec['name']}: {rec['base']:.3f} -> {rec['final']:.3f} "
            f"({rec['gain'] * 100:+.1f}), {rec['wall_seconds']:.0f} s",
            flush=True,
        )
        return rec

    with ThreadPoolExecutor(args.jobs) as pool:
        for rec in pool.map(one, jobs):
            records.append(rec)  # written after each run: an interrupted suite resumes
            results.write_text(json.dumps(records, indent=1))
            (args.out / "table.md").write_text(to_markdown(records))
    if records:
        print(to_markdown(records))


if __name__ == "__main__":
    main()
