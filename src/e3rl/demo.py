"""`e3rl demo`: the whole method on a laptop-sized problem, in minutes.

A tiny Llama is warm-started on worked arithmetic (cached after the first run), then trained
with GRPO on prompts of graded difficulty; validation accuracy on held-out prompts is measured
before and after. `configs/demo.yaml` holds the same settings for `e3rl train`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from e3rl.config_io import apply_overrides, config_from_dict

DEMO: dict = {
    "model": {"path": "tiny", "warm_start": {"steps": 1500, "lr": 3e-3, "batch_size": 48}},
    "task": {"levels": [1, 2, 3, 4, 6, 7], "train_size": 4000, "val_size": 300},
    "data": {"train": "arith:train", "val": "arith:val", "batch_size": 16},
    "rollout": {"n": 8, "max_new_tokens": 36, "temperature": 1.0},
    "optim": {"lr": 5e-5, "warmup_steps": 10, "schedule": "cosine"},
    "trainer": {"total_steps": 300, "eval_every": 50, "save_every": 100, "threads": 2},
}


def demo_config(output_dir: Path, overrides: list[str] | None = None):
    data = json.loads(json.dumps(DEMO))  # a deep copy the overrides may change
    data["trainer"]["output_dir"] = str(output_dir)
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def _free_dir(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... when an earlier demo run is there: never overwrite one."""
    candidate, k = path, 1
    while (candidate / "metrics.jsonl").exists() or (candidate / "summary.json").exists():
        k += 1
        candidate = path.with_name(f"{path.name}-{k}")
    if candidate != path:
        print(f"{path} holds an earlier demo run; this one goes to {candidate}")
    return candidate


def run_demo(output_dir: Path, overrides: list[str] | None = None, quiet: bool = False) -> dict:
    from e3rl.trainer import train

    t0 = time.perf_counter()
    output_dir = _free_dir(output_dir)
    cfg = demo_config(output_dir, overrides)
    summary = train(cfg, quiet=quiet)
    if summary.get("stopped"):  # no final model: no summary.json (it marks a finished run)
        return summary
    summary["wall_seconds"] = time.perf_counter() - t0
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    try:
        from e3rl.report import make_report

        make_report([output_dir], output_dir / "report")
    except ImportError:  # matplotlib is an extra
        pass
    base, final = summary["base_val_accuracy"], summary["final_val_accuracy"]
    print(
        f"\ne3rl demo: validation accuracy {base:.3f} -> {final:.3f} "
        f"({(final - base) * 100:+.1f} points) on {summary['val_prompts']} held-out prompts, "
        f"{summary['steps']} steps, {summary['rollouts']} rollouts, {summary['tokens']} tokens, "
        f"{summary['wall_seconds']:.0f} s.\nrun directory: {output_dir} "
        f"(metrics.jsonl, summary.json, report/report.md, final/)"
    )
    return summary
