"""Soak: a long run of a tiny model must not grow its resident memory or its open files.

Runs `--steps` training steps in this process (a tiny Llama on the arithmetic task, no
validation, a checkpoint every 100 steps) and samples the resident set size (VmRSS in
/proc/self/status) and the number of open file descriptors (/proc/self/fd) every `--every`
steps. The growth rate is the least-squares slope over the second half of the samples (the first
half includes allocator warm-up). Writes benchmarks/results/soak.json and prints a summary.

    nice -n 10 .venv/bin/python benchmarks/soak.py            # 500 steps, a few minutes
    .venv/bin/python benchmarks/soak.py --steps 60 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "soak.json"

# Like the tests' TINY config: a 2-layer, 32-wide Llama; 4 prompts x 4 rollouts of 8 tokens.
TINY = [
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=2",
    "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64",
    "task.train_size=200",
    "task.val_size=40",
    "task.levels=[1,2,3]",
    "rollout.max_new_tokens=8",
    "data.batch_size=4",
    "rollout.n=4",
    "data.val=null",
    "trainer.eval_every=0",
    "trainer.threads=1",
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope_per_100(steps: list[int], values: list[float]) -> float:
    """Least-squares slope of values over steps, per 100 steps."""
    if len(steps) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(steps, float), np.asarray(values, float), 1)[0] * 100)


def soak(steps: int = 500, every: int = 10, save_every: int = 100, run_dir: Path | None = None):
    """Trains `steps` steps, sampling memory and descriptors; returns the figures as a dict."""
    import e3rl.train.run as run_module
    from e3rl.config_io import load_config
    from e3rl.runlog import RunLogger
    from e3rl.train import train

    samples: list[dict] = []

    class SamplingLogger(RunLogger):
        """The run's logger, plus a sample every `every` steps (after the step is logged)."""

        def step(self, row: dict) -> None:
            super().step(row)
            if row["step"] % every == 0:
                samples.append({"step": row["step"], "rss_mb": rss_mb(), "fds": open_fds()})

    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="e3rl-soak-")
        run_dir = Path(tmp.name)
    overrides = [
        *TINY,
        f"trainer.total_steps={steps}",
        f"trainer.save_every={save_every}",
        f"trainer.output_dir={run_dir / 'run'}",
    ]
    cfg = load_config(None, overrides)
    original = run_module.RunLogger
    run_module.RunLogger = SamplingLogger
    t0 = time.perf_counter()
    try:
        train(cfg, quiet=True)
    finally:
        run_module.RunLogger = original
        if tmp is not None:
            tmp.cleanup()
    wall = time.perf_counter() - t0

    half = samples[len(samples) // 2 :]
    xs = [s["step"] for s in half]
    return {
        "steps": steps,
        "sample_every": every,
        "save_every": save_every,
        "overrides": overrides[:-1],
        "wall_seconds": round(wall, 1),
        "seconds_per_step": round(wall / max(steps, 1), 4),
        "rss_mb_first": round(samples[0]["rss_mb"], 1) if samples else None,
        "rss_mb_last": round(samples[-1]["rss_mb"], 1) if samples else None,
        "rss_mb_max": round(max(s["rss_mb"] for s in samples), 1) if samples else None,
        "rss_slope_mb_per_100_steps_second_half": round(
            slope_per_100(xs, [s["rss_mb"] for s in half]), 3
        ),
        "fds_first": samples[0]["fds"] if samples else None,
        "fds_last": samples[-1]["fds"] if samples else None,
        "fds_max": max(s["fds"] for s in samples) if samples else None,
        "fd_slope_per_100_steps_second_half": round(slope_per_100(xs, [s["fds"] for s in half]), 3),
        "samples": samples,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch_threads": 1,
            "load_average_at_end": os.getloadavg()[0],
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--every", type=int, default=10, help="sample every this many steps")
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    res = soak(args.steps, args.every, args.save_every)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"{res['steps']} steps in {res['wall_seconds']} s: RSS {res['rss_mb_first']} -> "
        f"{res['rss_mb_last']} MB (max {res['rss_mb_max']}), slope over the second half "
        f"{res['rss_slope_mb_per_100_steps_second_half']:+.3f} MB per 100 steps; open fds "
        f"{res['fds_first']} -> {res['fds_last']} (max {res['fds_max']}), slope "
        f"{res['fd_slope_per_100_steps_second_half']:+.3f} per 100 steps; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
