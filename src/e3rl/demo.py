"""`e3rl demo`: the method against plain GRPO on a laptop-sized problem, in minutes.

A tiny Llama, warm-started on arithmetic (shipped with e3rl, checked against a declared band:
see docs/demo.md), is trained twice from the same base on prompts of graded difficulty: with
e3rl's method (value-based rollout allocation, entropy-targeting temperature with annealing,
length bias) and with uniform GRPO (8 rollouts per prompt, fixed temperature). Greedy accuracy
on held-out prompts is measured before, during and after. `configs/e3rl.yaml` and
`configs/demo.yaml` hold the same two settings for `e3rl train` (a test keeps them identical).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from e3rl.config_io import apply_overrides, config_from_dict
from e3rl.warmstart import BaseBand

# The shared settings, and by themselves the uniform GRPO baseline (= configs/demo.yaml).
DEMO: dict = {
    "model": {
        "path": "tiny",
        # seed fixed: every trainer.seed starts from the same (shipped) base
        "warm_start": {"steps": 1500, "lr": 3e-3, "batch_size": 48, "seed": 0},
    },
    "task": {
        "levels": [1, 2, 3, 4, 6, 7],
        "train_size": 4000,
        "val_size": 300,
        "worked_fraction": 0.75,
        "worked_prior": 0.3,
    },
    "data": {"train": "arith:train", "val": "arith:val", "batch_size": 16, "max_prompt_tokens": 64},
    "rollout": {"n": 8, "max_new_tokens": 36, "temperature": 1.0},
    "optim": {"lr": 5e-5, "warmup_steps": 10, "schedule": "cosine"},
    "trainer": {"total_steps": 300, "eval_every": 50, "save_every": 100, "threads": 2},
}

# e3rl's method on top of DEMO (= configs/e3rl.yaml): what `e3rl demo` runs first.
METHOD: dict = {
    "budget": {
        "allocator": "value",
        "rank_refresh": "step",
        "n_min": 0,
        "n_max": 16,
        "prior": [1.0, 1.0],
        "recheck_prob": 0.05,
    },
    "rollout": {"temperature_control": "entropy"},
    # the target is the mean entropy of 10 steps: one step's varies by ~20 % (sd) here
    "temperature": {"warmup_steps": 10, "anneal": True},
    "reward": {"length_bias": {"mu": 0.001, "threshold": 0.1}},
}

ARMS: dict[str, dict] = {"e3rl": METHOD, "uniform": {}}
"""The demo's arms, in the order they run: the method, then the baseline."""

BAND = BaseBand(
    levels=(2, 3, 4),
    worked_share=(0.0, 0.35),
    p_worked=(0.1, 0.45),
    min_worked_advantage=0.3,
    greedy_accuracy=(0.2, 0.6),
)
"""What the demo's base must look like (declared in docs/demo.md before it was measured under
perturbations): checked by scripts/build_demo_base.py, the tests, and any demo that builds it."""


def _merge(base: dict, extra: dict) -> dict:
    out = json.loads(json.dumps(base))  # a deep copy the caller may change
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


def demo_config(output_dir: Path, overrides: list[str] | None = None, arm: str = "uniform"):
    """The config of one arm of the demo (`uniform` = DEMO itself, `e3rl` = DEMO + METHOD)."""
    if arm not in ARMS:
        raise ValueError(f"demo arm {arm!r} does not exist; valid arms: {sorted(ARMS)}")
    data = _merge(DEMO, ARMS[arm])
    data["trainer"]["output_dir"] = str(output_dir)
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def _free_dir(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... when an earlier demo run is there: never overwrite one."""
    candidate, k = path, 1
    while (
        (candidate / "metrics.jsonl").exists()
        or (candidate / "summary.json").exists()
        or any((candidate / arm / "metrics.jsonl").exists() for arm in ARMS)
    ):
        k += 1
        candidate = path.with_name(f"{path.name}-{k}")
    if candidate != path:
        print(f"{path} holds an earlier demo run; this one goes to {candidate}")
    return candidate


def arm_figures(run_dir: Path, summary: dict, cfg) -> dict[str, Any]:
    """What the demo reports per arm: accuracy curve against rollouts, share of rollouts in mixed
    groups, entropy against its target; plus what ran (allocator, temperature control)."""
    from e3rl.runlog import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")

    def mean(key: str, part: slice = slice(None)) -> float | None:
        vals = [r[key] for r in rows[part] if isinstance(r.get(key), (int, float))]
        return sum(vals) / len(vals) if vals else None

    targets = [r for r in rows if isinstance(r.get("target_entropy"), (int, float))]
    return {
        **summary,
        "allocator": cfg.budget.allocator,
        "n_range": [cfg.budget.n_min, cfg.budget.n_max],
        "temperature_control": cfg.rollout.temperature_control,
        "temperature_anneal": bool(cfg.temperature.anneal),
        "length_bias_mu": cfg.reward.length_bias.mu,
        "val_curve": [
            [r["cum_rollouts"], r["val_accuracy"]]
            for r in rows
            if isinstance(r.get("val_accuracy"), (int, float))
        ],
        "frac_rollouts_mixed": mean("frac_rollouts_mixed"),
        "frac_all_wrong": mean("frac_all_wrong"),
        "entropy_first_50": mean("entropy", slice(0, 50)),
        "entropy_last_50": mean("entropy", slice(-50, None)),
        "target_entropy_last_50": (
            sum(r["target_entropy"] for r in targets[-50:]) / len(targets[-50:])
            if targets
            else None
        ),
        "temperature_last": rows[-1].get("temperature") if rows else None,
        "response_length_first_50": mean("response_length", slice(0, 50)),
        "response_length_last_50": mean("response_length", slice(-50, None)),
    }


def _base_seed(cfg) -> int:
    ws = cfg.model.warm_start.seed
    return cfg.trainer.seed if ws is None else ws


def prepare_base(cfg) -> dict[str, Any]:
    """Finds or builds the demo's base and says which; a base built here is checked against
    BAND, and the demo stops when its own default base fails it (results would not be the
    documented ones). Returns what summary.json records about the base."""
    from e3rl.warmstart import find_base

    if cfg.model.path != "tiny":
        return {"source": "model.path", "path": cfg.model.path}
    seed = _base_seed(cfg)
    found = find_base(cfg.model, cfg.task, seed)
    if found is not None:
        path, where = found
        check_file = path / "base_check.json"
        check = json.loads(check_file.read_text()) if check_file.is_file() else None
        if check is not None:  # the headline figures; the file has the per-level probe
            check = {k: check[k] for k in ("measures", "problems", "built_on") if k in check}
        print(f"base model: {'shipped with e3rl' if where == 'shipped' else 'cached'} ({path})")
        return {"source": where, "path": str(path), "check": check}
    return _build_and_check(cfg, seed)


def _build_and_check(cfg, seed: int) -> dict[str, Any]:
    from e3rl.models import load_policy
    from e3rl.warmstart import band_measures, check_base, find_base, probe_base

    model, tokenizer = load_policy(cfg.model, cfg.task, seed)  # builds and caches it
    path = find_base(cfg.model, cfg.task, seed)[0]
    report = probe_base(model, tokenizer, cfg.task)
    problems = check_base(report, BAND)
    check = {"measures": band_measures(report, BAND), "problems": problems}
    (path / "base_check.json").write_text(json.dumps({**check, "probe": report}, indent=2))
    if problems:
        default = demo_config(Path("unused"))
        is_default = (default.model, default.task) == (cfg.model, cfg.task)
        message = (
            f"the base model built here ({path}) is outside the demo's band: "
            + "; ".join(problems)
            + ". RL from it will not show what docs/demo.md describes."
        )
        if is_default:
            raise SystemExit(message + " Use the base shipped with e3rl (reinstall e3rl).")
        print(f"warning: {message}")
    return {"source": "built", "path": str(path), "check": check}


def cpu_model() -> str:
    """lscpu's model name (the CPU a figure was measured on), else what platform knows."""
    import platform
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Where a run ran: what decides its floating-point path."""
    import torch

    return {
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def _print_side_by_side(arms: dict[str, dict]) -> None:
    def f(v: Any, spec: str = ".3f") -> str:
        return "—" if v is None else format(v, spec)

    print("\n                       " + "".join(f"{name:>12}" for name in arms))
    lines = [
        ("allocator", lambda a: a["allocator"]),
        ("temperature control", lambda a: a["temperature_control"]),
        ("val accuracy, base", lambda a: f(a["base_val_accuracy"])),
        ("val accuracy, final", lambda a: f(a["final_val_accuracy"])),
        ("rollouts", lambda a: f(a["rollouts"], ",")),
        ("rollouts in mixed groups", lambda a: f(a["frac_rollouts_mixed"])),
        ("entropy, last 50 steps", lambda a: f(a["entropy_last_50"])),
        ("entropy target, last 50", lambda a: f(a["target_entropy_last_50"])),
    ]
    for label, get in lines:
        print(f"{label:<23}" + "".join(f"{get(a):>12}" for a in arms.values()))


def run_demo(
    output_dir: Path,
    overrides: list[str] | None = None,
    quiet: bool = False,
    baseline: bool = True,
) -> dict:
    """Runs the method (and, with `baseline`, uniform GRPO from the same base); writes
    `summary.json` and a side-by-side report to `output_dir`; returns the summary."""
    from e3rl.trainer import train

    t0 = time.perf_counter()
    output_dir = _free_dir(output_dir)
    arms = ["e3rl", "uniform"] if baseline else ["e3rl"]
    cfgs = {arm: demo_config(output_dir / arm, overrides, arm) for arm in arms}
    base = prepare_base(cfgs["e3rl"])
    results: dict[str, dict] = {}
    for arm, cfg in cfgs.items():
        what = "e3rl's method" if arm == "e3rl" else "the baseline, uniform GRPO"
        print(f"\ntraining {what} ({arm}): {cfg.trainer.total_steps} steps -> {output_dir / arm}")
        summary = train(cfg, quiet=quiet)
        if summary.get("stopped"):  # no final model: no summary.json (it marks a finished run)
            return summary
        results[arm] = arm_figures(output_dir / arm, summary, cfg)
    method = results["e3rl"]
    out = {
        "method": "e3rl",
        "allocator": method["allocator"],
        "temperature_control": method["temperature_control"],
        "base_val_accuracy": method["base_val_accuracy"],
        "final_val_accuracy": method["final_val_accuracy"],
        "val_prompts": method["val_prompts"],
        "steps": method["steps"],
        "rollouts": method["rollouts"],
        "tokens": method["tokens"],
        "base_model": base,
        "arms": results,
        "baseline": results.get("uniform"),
        "environment": environment(),
        "wall_seconds": time.perf_counter() - t0,
    }
    (output_dir / "summary.json").write_text(json.dumps(out, indent=2))
    try:
        from e3rl.report import make_report

        make_report([output_dir / arm for arm in arms], output_dir / "report")
    except ImportError:  # matplotlib is an extra
        pass
    if baseline:
        _print_side_by_side(results)
    b, fin = out["base_val_accuracy"], out["final_val_accuracy"]
    line = (
        f"\ne3rl demo: validation accuracy {b:.3f} -> {fin:.3f} ({(fin - b) * 100:+.1f} points) "
        f"with e3rl's method"
    )
    if baseline:
        u = results["uniform"]["final_val_accuracy"]
        line += f", {b:.3f} -> {u:.3f} ({(u - b) * 100:+.1f}) with uniform GRPO"
    print(
        line + f", on {out['val_prompts']} held-out prompts, {out['steps']} steps and "
        f"{out['rollouts']:,} rollouts each; {out['wall_seconds']:.0f} s in all.\n"
        f"run directory: {output_dir} (summary.json, report/report.md; per arm "
        f"{' and '.join(a + '/' for a in arms)}: metrics.jsonl, final/)"
    )
    return out
