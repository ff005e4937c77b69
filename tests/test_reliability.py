"""Contained rewards, NaN guards, graceful stop: a run survives what goes wrong inside it."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY
from e3rl.config_io import load_config
from e3rl.rewards.checkers import math_reward, resolve_reward
from e3rl.rewards.runner import RewardRunner
from test_cli import run_cli

HELPERS = str(Path(__file__).parent / "helpers")
SMALL = [*TINY, "data.val=null", "data.batch_size=2", "rollout.n=2", "--quiet"]


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _main(*args: str) -> tuple[int, str, str]:
    """`e3rl ARGS` through the console script's entry point, in this process."""
    from e3rl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _says(stderr: str, phrase: str) -> bool:
    """Whether the log holds `phrase`, wherever the console wrapped its lines."""
    return "".join(phrase.split()) in "".join(stderr.split())


@pytest.fixture
def helpers_on_path(monkeypatch):
    """Subprocesses (the CLI, reward workers) import toy_rewards from tests/helpers."""
    paths = [HELPERS, *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


# ----------------------------------------------------------------------------- rewards


def test_sleeping_reward_times_out_and_is_counted_through_the_cli(tmp_path, helpers_on_path):
    run = tmp_path / "run"
    res = run_cli(
        "train",
        *SMALL,
        "reward.fn=toy_rewards:sleeps",
        "reward.timeout=0.2",
        "trainer.total_steps=2",
        f"trainer.output_dir={run}",
    )
    assert res.returncode == 0, res.stderr
    rows = _rows(run)
    assert [r["reward_timeouts"] for r in rows] == [4, 4]
    assert [r["reward_errors"] for r in rows] == [0, 0]
    assert all(r["reward_mean"] == 0 for r in rows)
    assert _says(res.stderr, "reward failures, e.g. {'error': 'timeout'")
    assert (run / "final" / "model.safetensors").is_file()


def test_raising_reward_is_counted_through_the_cli(tmp_path):
    run = tmp_path / "run"
    code, _, err = _main(
        "train",
        *SMALL,
        "reward.fn=toy_rewards:raises",
        "trainer.total_steps=2",
        f"trainer.output_dir={run}",
    )
    assert code == 0, err
    assert [r["reward_errors"] for r in _rows(run)] == [4, 4]
    assert _says(err, "reward failures, e.g. {'error': 'RuntimeError: boom'")


@pytest.mark.parametrize(
    "fn, why", [("returns_nan", "non-finite reward nan"), ("returns_text", "ValueError")]
)
def test_nan_or_text_reward_counts_as_an_error(tmp_path, fn, why):
    run = tmp_path / "run"
    code, _, err = _main(
        "train",
        *SMALL,
        f"reward.fn=toy_rewards:{fn}",
        "trainer.total_steps=1",
        f"trainer.output_dir={run}",
    )
    assert code == 0, err
    (row,) = _rows(run)
    assert row["reward_errors"] == 4 and row["reward_mean"] == 0
    assert _says(err, why)


def test_math_reward_runs_under_the_timeout(tmp_path):
    """math-verify's own `except Exception` must not swallow the time limit (it once did)."""
    hard = "\\boxed{9^{9^{9^{9}}}}"  # sympy tries to evaluate it: it would never finish
    for isolate in (False, True):
        # 2 s: the easy answer must finish well inside it even on a loaded machine
        runner = RewardRunner(math_reward, timeout=2.0, isolate=isolate)
        runner(["\\boxed{1}"], ["1"])  # math-verify's first import is slow
        runner.reset_counts()
        t0 = time.perf_counter()
        scores = runner([hard, "so \\boxed{\\frac{1}{2}}"], ["1", "0.5"])
        assert scores == [0.0, 1.0] and runner.timeouts == 1 and runner.errors == 0
        assert time.perf_counter() - t0 < 30  # contained: without the limit it never returns
        runner.close()


def test_math_reward_through_the_cli_on_a_jsonl_file(tmp_path):
    data = tmp_path / "math.jsonl"
    rows = [{"problem": f"What is {a}+{a}?", "answer": f"\\frac{{{2 * a}}}{{1}}"} for a in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    code, _, err = _main(
        "train",
        *SMALL,
        f"data.train={data}",
        "reward.fn=math",
        "reward.timeout=2",
        "trainer.total_steps=1",
        f"trainer.output_dir={run}",
    )
    assert code == 0, err
    (row,) = _rows(run)
    assert row["rollouts"] == 4 and row["reward_timeouts"] == 0 and row["reward_errors"] == 0


def test_a_call_stuck_beyond_signals_kills_only_the_worker():
    runner = RewardRunner(resolve_reward("toy_rewards:hangs_unless_ok"), timeout=0.2, isolate=True)
    t0 = time.perf_counter()
    assert runner(["hang", "ok"], ["1", "1"]) == [0.0, 1.0]
    assert runner.timeouts == 1 and time.perf_counter() - t0 < 10
    runner.close()


def test_a_crashing_reward_worker_is_restarted():
    runner = RewardRunner(resolve_reward("toy_rewards:crashes_unless_ok"), timeout=5, isolate=True)
    assert runner(["crash", "ok", "crash", "ok"], ["1"] * 4) == [0.0, 1.0, 0.0, 1.0]
    assert runner.errors == 2 and "worker process died (exit code 3)" in runner.samples[0]["error"]
    runner.close()


# ----------------------------------------------------------------------------- NaN guards


def test_a_nan_loss_skips_the_update_and_leaves_weights_untouched(tiny):
    from e3rl.algos import group_advantages
    from e3rl.config import AlgoConfig
    from e3rl.rollout.hf import HFEngine
    from e3rl.update import policy_update

    model, tok, problems = tiny
    model = copy.deepcopy(model)  # the fixture's model is shared
    prompts = [
        tok(p.question, add_special_tokens=False)["input_ids"] for p in problems["train"][:3]
    ]
    r = HFEngine(model, tok, 8, torch.Generator().manual_seed(0)).generate(
        prompts, [3, 3, 3], 1.0, 6
    )
    adv = group_advantages(torch.arange(9.0), r.prompt_index, "grpo", 1e-6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = AlgoConfig(minibatches=2, micro_batch_size=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    out = policy_update(model, opt, r, adv, 1.0, cfg, 1.0, inject_nan=True)
    assert out["skipped_updates"] == 2 and out["grad_norm"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not opt.state  # the optimizer's moments never saw the NaN
    assert all(p.grad is None for p in model.parameters())

    out = policy_update(model, opt, r, adv, 1.0, cfg, 1.0)  # the same batch, no NaN: it trains
    assert out["skipped_updates"] == 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_injected_nan_steps_are_skipped_counted_and_never_checkpointed(tmp_path, monkeypatch):
    from e3rl.guards import TrainingError
    from e3rl.trainer import train

    monkeypatch.setenv("E3RL_TEST_NAN_STEPS", "2,4,5")
    handler = signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    cfg = load_config(
        None,
        [
            *SMALL[:-1],
            "reward.fn=toy_rewards:starts_with_digit",
            "trainer.total_steps=6",
            "trainer.save_every=1",
            "trainer.keep_checkpoints=10",
            "trainer.max_bad_steps=2",
            f"trainer.output_dir={run}",
        ],
    )
    with pytest.raises(TrainingError) as e:
        train(cfg, quiet=True)
    assert "steps 4-5: 2 updates in a row" in str(e.value)
    assert f"{run / 'checkpoints' / 'step-000003'}, is from step 3, before the problem" in str(
        e.value
    )
    assert [r["skipped_updates"] for r in _rows(run)] == [0, 1, 0, 1, 1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000001",
        "step-000003",
    ]
    assert not (run / "final").exists()
    assert signal.getsignal(signal.SIGINT) is handler  # restored after the error


# ----------------------------------------------------------------------------- graceful stop


def test_sigint_stops_after_the_step_with_a_checkpoint_and_resume_finishes(tmp_path):
    run = tmp_path / "run"
    common = [*SMALL, "trainer.total_steps=3", f"trainer.output_dir={run}"]
    handler = signal.getsignal(signal.SIGINT)
    code, out, err = _main("train", *common, "reward.fn=toy_rewards:signals_once")
    assert code == 0, err
    assert _says(err, "SIGINT: stopped at step 1; resume with --resume")
    assert json.loads(out)["stopped"] is True
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]
    assert not (run / "final").exists() and not (run / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is handler

    for stop in (2, 3):  # each run's reward worker signals once: one more step per run
        code, _, err = _main("train", *common, "reward.fn=toy_rewards:signals_once", "--resume")
        assert code == 0 and _says(err, f"resumed from {run}/checkpoints/step-00000{stop - 1}")
    assert [r["step"] for r in _rows(run)] == [1, 2, 3]
    assert (run / "final" / "model.safetensors").is_file()


def test_sigterm_from_outside_stops_the_cli_cleanly(tmp_path, helpers_on_path):
    run = tmp_path / "run"
    args = [*SMALL, "trainer.total_steps=500", "trainer.save_every=0", f"trainer.output_dir={run}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "e3rl.cli", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text()):
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    step = json.loads(out)["steps"]
    assert 1 <= step < 500
    assert _says(err, f"SIGTERM: stopped at step {step}; resume with --resume")
    assert [p.name for p in (run / "checkpoints").iterdir()] == [f"step-{step:06d}"]
    assert not (run / "final").exists()
    assert [r["step"] for r in _rows(run)] == list(range(1, step + 1))


def test_e3rl_debug_reraises(monkeypatch):
    from e3rl.cli import main
    from e3rl.config import ConfigError

    monkeypatch.setenv("E3RL_DEBUG", "1")
    with pytest.raises(ConfigError, match="trainer.total_stepz"):
        main(["train", "trainer.total_stepz=3"])
