"""Tests of e3rl.report on synthetic run directories written by the tests themselves.

The data is fake but shaped like a real run (epochs, a widening allocation range, an entropy
controller, periodic validation), because what is tested here is loading and plotting.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from e3rl.metrics import pass_at_k
from e3rl.report import load_run, make_report

pytest.importorskip("matplotlib")

ALL_FIGURES = (
    "validation_accuracy.png",
    "entropy_temperature.png",
    "group_outcomes.png",
    "allocation.png",
    "allocation_hist.png",
    "pass_at_k.png",
    "training.png",
    "time.png",
)


def fake_metrics(
    steps: int, seed: int, dynamic: bool, control_temperature: bool
) -> list[dict[str, object]]:
    """Per-step records as the trainer logs them: 32 prompts x 8 rollouts, 4 epochs."""
    rng = np.random.default_rng(seed)
    batch, n, steps_per_epoch = 32, 8, max(1, steps // 4)
    n_min = n_max = n
    cum_rollouts = cum_tokens = 0
    temperature, target = 1.0, None
    rows: list[dict[str, object]] = []
    for step in range(1, steps + 1):
        epoch = (step - 1) // steps_per_epoch + 1
        if dynamic and step > 1 and (step - 1) % steps_per_epoch == 0:
            n_min, n_max = max(n_min - 2, 4), min(n_max + 2, 12)
        counts = rng.integers(n_min, n_max + 1, size=batch)
        counts[0] += batch * n - counts.sum()  # keep the budget exact
        counts = np.clip(counts, n_min, n_max)
        hist = {str(v): int((counts == v).sum()) for v in np.unique(counts)}
        progress = step / steps
        acc = 0.3 + 0.3 * (1 - math.exp(-3 * progress))
        all_wrong = max(0.0, 0.35 - 0.2 * progress - (0.03 if dynamic else 0) + rng.normal(0, 0.04))
        all_correct = max(0.0, 0.05 + 0.25 * progress + rng.normal(0, 0.04))
        entropy_t1 = 0.76 * math.exp(-0.6 * progress) + rng.normal(0, 0.01)
        entropy = entropy_t1 * temperature**1.5
        if control_temperature:
            target = 0.76 if step > 1 else None
            if target is not None:
                temperature *= 1 + temperature * math.log(target / entropy) / 12.0
                temperature = min(max(temperature, 0.5), 1.6)
        rollouts = int(counts.sum())
        tokens = int(rollouts * rng.normal(350, 20))
        cum_rollouts += rollouts
        cum_tokens += tokens
        row: dict[str, object] = {
            "step": step,
            "epoch": epoch,
            "cum_rollouts": cum_rollouts,
            "cum_tokens": cum_tokens,
            "rollouts": rollouts,
            "tokens": tokens,
            "reward_mean": acc + rng.normal(0, 0.03),
            "frac_all_correct": all_correct,
            "frac_all_wrong": all_wrong,
            "frac_mixed": max(0.0, 1 - all_correct - all_wrong),
            "alloc_min": int(counts.min()),
            "alloc_mean": float(counts.mean()),
            "alloc_max": int(counts.max()),
            "alloc_hist": hist,
            "entropy": entropy,
            "entropy_t1": entropy_t1,
            "temperature": temperature,
            "target_entropy": target,
            "kl": 0.0,
            "clip_frac": abs(rng.normal(0.02, 0.005)),
            "grad_norm": abs(rng.normal(0.4, 0.1)),
            "loss": rng.normal(0, 0.02),
            "time_generate": rng.normal(1.2, 0.05),
            "time_reward": rng.normal(0.1, 0.01),
            "time_update": rng.normal(0.6, 0.03),
        }
        if step % 10 == 0 or step == 1:
            row["val_accuracy"] = acc + rng.normal(0, 0.01)
            row["val_pass@8"] = min(1.0, acc + 0.2)
        rows.append(row)
    return rows


def fake_eval(seed: int, n: int = 64, prompts: int = 40) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 1.5, size=prompts)
    correct = [int(rng.binomial(n, pi)) for pi in p]
    ks = [1, 2, 4, 8, 16, 32, 64]
    curve = {str(k): float(np.mean([pass_at_k(n, c, k) for c in correct])) for k in ks}
    return {
        "greedy_accuracy": float(np.mean(p > 0.5)),
        "mean_at_n": float(np.mean(correct) / n),
        "pass_at_k": curve,
        "entropy": 0.71,
        "distinct_answers": 3.4,
        "n": n,
        "num_prompts": prompts,
        "by_group": {
            "level": {
                "1": {"accuracy": 0.8, "count": 20},
                "2": {"accuracy": 0.4, "count": 20},
            }
        },
    }


def write_run(
    run_dir: Path,
    seed: int,
    steps: int = 120,
    dynamic: bool = True,
    control_temperature: bool = True,
    with_eval: bool = True,
    torn_last_line: bool = False,
) -> Path:
    run_dir.mkdir(parents=True)
    rows = fake_metrics(steps, seed, dynamic, control_temperature)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn_last_line:
        text += json.dumps(fake_metrics(steps + 1, seed, dynamic, False)[-1])[:57]
    (run_dir / "metrics.jsonl").write_text(text)
    if with_eval:
        (run_dir / "eval.json").write_text(json.dumps(fake_eval(seed)))
    (run_dir / "config.yaml").write_text(f"seed: {seed}\nbudget:\n  allocator: rank\n")
    (run_dir / "summary.json").write_text(json.dumps({"wall_time_s": 321.0, "steps": steps}))
    return run_dir


def test_load_run_tolerates_a_torn_last_line(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "crashed", seed=0, steps=30, torn_last_line=True)
    with pytest.warns(UserWarning, match="1 unparseable"):
        run = load_run(run_dir)
    assert run.name == "crashed"
    assert run.bad_lines == 1
    assert [r["step"] for r in run.metrics] == list(range(1, 31))
    assert run.config == {"seed": 0, "budget": {"allocator": "rank"}}
    assert run.eval is not None and run.summary == {"wall_time_s": 321.0, "steps": 30}
    steps, val = run.series("val_accuracy")
    assert list(steps) == [1, 10, 20, 30] and len(val) == 4
    assert run.last("target_entropy") == pytest.approx(0.76)
    assert not run.has("no_such_key")


def test_load_run_keeps_the_last_record_of_a_resumed_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    lines = [
        json.dumps({"step": 1, "loss": 1.0}),
        json.dumps({"step": 2, "loss": 2.0}),
        '{"step": 3, "lo',  # crash mid-write, then resume from the step-1 checkpoint
        json.dumps({"step": 2, "loss": 2.5}),
        json.dumps({"step": 3, "loss": 3.5}),
    ]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning):
        run = load_run(run_dir)
    assert [(r["step"], r["loss"]) for r in run.metrics] == [(1, 1.0), (2, 2.5), (3, 3.5)]
    assert run.eval is None and run.config is None


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_run(tmp_path / "empty")


def test_report_on_two_runs_writes_every_figure(tmp_path: Path) -> None:
    runs = [
        write_run(tmp_path / "grpo_fixed_T", seed=1, dynamic=False, control_temperature=False),
        write_run(tmp_path / "e3_dynamic", seed=2, steps=100, torn_last_line=True),
    ]
    out = tmp_path / "report"
    with pytest.warns(UserWarning):
        report = make_report(runs, out)
    assert report == out / "report.md"
    for name in ALL_FIGURES:
        png = out / name
        assert png.is_file(), name
        assert png.stat().st_size > 10_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = report.read_text()
    for name in ALL_FIGURES:
        assert f"]({name})" in md  # embedded with a relative path
    table_rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| grpo_fixed_T |") for line in table_rows)
    assert any(line.startswith("| e3_dynamic |") for line in table_rows)
    assert "pass@64" in md and "best val acc" in md and "Skipped figures" not in md
    assert "**By level**" in md and "| 2 | e3_dynamic | 0.400 | 20 |" in md


def test_report_skips_missing_data_and_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "no_val"
    run_dir.mkdir()
    rows = fake_metrics(20, seed=3, dynamic=True, control_temperature=True)
    for row in rows:
        row.pop("val_accuracy", None)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    out.mkdir()
    (out / "pass_at_k.png").write_bytes(b"stale")  # left over from an earlier report
    md = make_report([run_dir], out).read_text()
    assert not (out / "validation_accuracy.png").exists()
    assert not (out / "pass_at_k.png").exists()
    assert "`validation_accuracy.png`): skipped, no run logged `val_accuracy`" in md
    assert "`pass_at_k.png`): skipped" in md
    assert (out / "allocation_hist.png").stat().st_size > 10_000
    assert "| no_val |" in md


def test_report_disambiguates_runs_with_the_same_name(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a" / "seed0", seed=4, steps=20, with_eval=False)
    b = write_run(tmp_path / "b" / "seed0", seed=5, steps=20, with_eval=False)
    md = make_report([a, b], tmp_path / "out").read_text()
    assert "| a/seed0 |" in md and "| b/seed0 |" in md


def test_report_requires_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_report([], tmp_path)


def test_report_on_a_one_step_run_with_a_dense_pass_at_k_curve(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "tiny", seed=6, steps=1, with_eval=False)
    curve = {str(k): 1 - 0.5**k for k in range(1, 33)}
    (run_dir / "eval.json").write_text(json.dumps({"pass_at_k": curve, "n": 32}))
    out = tmp_path / "out"
    md = make_report([run_dir], out).read_text()
    assert (out / "pass_at_k.png").is_file() and (out / "entropy_temperature.png").is_file()
    assert "| tiny | 1 |" in md
    assert "pass@32" in md and "pass@3 " not in md  # table keeps powers of two and the max
