"""Seconds a training step of a testbed, measured alone: the "cheap" property of docs/benchmarks.md.

    E3RL_CACHE=/tmp/testbed-cache PYTHONPATH=src .venv/bin/python benchmarks/testbed_step_time.py
    ... benchmarks/testbed_step_time.py --testbed countdown --steps 60 --repeats 3

The suite's own records time steps while two runs share the cores (and candidates run at one
thread beside others), so their `step_seconds` are upper bounds. This runs `--repeats` short
uniform-GRPO runs of the testbed one after another at 2 threads, nothing else started by it, and
reports the median over every step after the first 10 (warm-up of the allocator and of the lr)
of time_plan + time_generate + time_reward + time_update, per repeat and pooled. Validation is off.
Run it on a quiet machine; the figure is only as good as that.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import testbed as T
import testbed_defs as D

KEYS = ("time_plan", "time_generate", "time_reward", "time_update")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def one_run(tb: dict, steps: int, threads: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "e3rl.cli",
            "train",
            tb["config"],
            *tb["overrides"],
            f"trainer.total_steps={steps}",
            "trainer.eval_every=0",
            "data.val=null",
            "trainer.save_every=0",
            f"trainer.threads={threads}",
            f"trainer.output_dir={tmp}/run",
            "--quiet",
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        rows = [
            json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        ]
    return [sum(r.get(k, 0.0) for k in KEYS) for r in rows[10:]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--testbed", default=D.CHOSEN, help=f"one of {', '.join(D.TESTBEDS)}")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=T.RESULTS / "step_seconds.json")
    a = p.parse_args()
    tb = D.testbed_config(a.testbed)
    per_run = [one_run(tb, a.steps, a.threads) for _ in range(a.repeats)]
    pooled = [t for run in per_run for t in run]
    res = {
        "testbed": a.testbed,
        "cpu": cpu_name(),
        "threads": a.threads,
        "steps_per_run": a.steps,
        "repeats": a.repeats,
        "median_per_run": [statistics.median(r) for r in per_run],
        "median": statistics.median(pooled),
        "threshold": T.S.STEP_SECONDS_MAX,
        "cheap": statistics.median(pooled) <= T.S.STEP_SECONDS_MAX,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
