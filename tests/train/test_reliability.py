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
from cli import run_cli

from conftest import TINY
from e3rl.config_io import load_config
from e3rl.rewards.checkers import math_reward, resolve_reward
from e3rl.rewards.runner import RewardRunner

HELPERS = str(Path(__file__).parents[1] / "helpers")
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


def test_a_reward_that_always_times_out_stops_the_run_through_the_cli(tmp_path, helpers_on_path):
    """Every call of step 1 timed out: nothing to learn from, so the run stops (exit 1) instead
    of training on zero rewards and reporting success."""
    run = tmp_path / "run"
    res = run_cli(
        "train",
        *SMALL,
        "reward.fn=toy_rewards:sleeps",
        "reward.timeout=0.2",
        "trainer.total_steps=2",
        f"trainer.output_dir={run}",
    )
    assert res.returncode == 1, res.stderr
    assert _says(
        res.stderr,
        "step 1: all 4 calls of reward.fn='toy_rewards:sleeps' failed (0 raised, 4 timed out)",
    )
    assert _says(res.stderr, "fn(response: str, answer: str, **info) -> float")
    assert "Traceback" not in res.stderr
    assert not (run / "final").exists() and not (run / "metrics.jsonl").exists()  # nor logged


def test_partly_failing_rewards_are_counted_and_the_run_goes_on(tmp_path):
    run = tmp_path / "run"
    code, _, err = _main(
        "train",
        *SMALL,
        "reward.fn=toy_rewards:raises_on_odd",
        "trainer.total_steps=3",
        f"trainer.output_dir={run}",
    )
    assert code == 0, err
    rows = _rows(run)
    assert len(rows) == 3 and sum(r["reward_errors"] for r in rows) > 0
    for r in rows:  # a failed call scores 0, the others 1: the mean says how many failed
        assert r["reward_errors"] == round(r["rollouts"] * (1 - r["reward_mean"]))
        assert 0 < r["reward_errors"] < r["rollouts"] or r["reward_errors"] == 0
    assert _says(err, "reward failures, e.g. {'error': 'RuntimeError: odd'")


@pytest.mark.parametrize(
    "fn, why",
    [
        ("raises", "RuntimeError: boom"),
        ("returns_nan", "non-finite reward nan"),
        ("returns_text", "ValueError"),
        ("needs_unknown_info", "TypeError"),  # passes the signature check, fails every call
    ],
)
def test_a_reward_that_fails_every_call_stops_with_a_clear_error(tmp_path, fn, why):
    run = tmp_path / "run"
    code, _, err = _main(
        "train",
        *SMALL,
        f"reward.fn=toy_rewards:{fn}",
        "trainer.total_steps=2",
        f"trainer.output_dir={run}",
    )
    assert code == 1, err
    assert _says(err, f"step 1: all 4 calls of reward.fn='toy_rewards:{fn}' failed (4 raised")
    assert _says(err, why) and _says(err, "no checkpoint was written")


def test_a_reward_of_the_wrong_signature_is_refused_before_training():
    from e3rl.rewards.checkers import resolve_reward

    with pytest.raises(ValueError, match=r"one_argument\(response: str\) -> float cannot be call"):
        resolve_reward("toy_rewards:one_argument")
    resolve_reward("toy_rewards:by_level")  # `level` may come from a prompt's info: allowed
    resolve_reward("toy_rewards:needs_unknown_info")  # the same: seen on the first step


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
    from e3rl.train.testing import nan_losses
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

    with nan_losses():  # the testing seam
        out = policy_update(model, opt, r, adv, 1.0, cfg, 1.0)
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
    assert code == 75, err  # stopped, resumable: not success
    assert _says(err, "SIGINT: stopped at step 1; resume with --resume")
    assert json.loads(out)["stopped"] is True
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]
    assert not (run / "final").exists() and not (run / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is handler

    for stop in (2, 3):  # each run's reward worker signals once: one more step per run
        code, _, err = _main("train", *common, "reward.fn=toy_rewards:signals_once", "--resume")
        assert code == (75 if stop < 3 else 0), err  # the signal at the last step: it finished
        assert _says(err, f"resumed from {run}/checkpoints/step-00000{stop - 1}")
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
    assert proc.returncode == 75, err  # what a job scheduler sees: stopped, not finished
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


# ----------------------------------------------------------------------------- exit codes


def test_exit_codes_are_distinct_and_documented():
    """The README's table and the CLI agree: 0 finished, 1 the run failed, 2 bad input,
    75 stopped (resumable), 130 aborted."""
    from e3rl import cli

    codes = {
        cli.EXIT_OK: 0,
        cli.EXIT_RUN_FAILED: 1,
        cli.EXIT_BAD_INPUT: 2,
        cli.EXIT_STOPPED: 75,
        cli.EXIT_ABORTED: 130,
    }
    assert all(k == v for k, v in codes.items()) and len(codes) == 5
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Exit codes") :][:2000]
    for code in codes:
        assert f"| {code} |" in section, code


# ----------------------------------------------------------------------------- resume config


def _lrs(run: Path) -> list[float]:
    return [r["lr"] for r in _rows(run)]


def test_resume_force_applies_a_changed_lr(tmp_path):
    """The new optim.lr takes effect from the first resumed step, on the same schedule: the
    logged lr of steps 3-4 equals that of a run trained with the new lr from the start (and
    resumed the same way: the cosine spans trainer.total_steps, which grows on resume)."""
    common = [
        *SMALL,
        "optim.schedule=cosine",
        "optim.warmup_steps=1",
        "trainer.save_every=2",
        "reward.fn=toy_rewards:starts_with_digit",
    ]
    run, ref = tmp_path / "run", tmp_path / "ref"
    for out, lr in ((run, "1e-3"), (ref, "1e-4")):
        code, _, err = _main(
            "train", *common, "trainer.total_steps=2", f"optim.lr={lr}", f"trainer.output_dir={out}"
        )
        assert code == 0, err
    for out, flag in ((run, "--resume-force"), (ref, "--resume")):
        code, _, err = _main(
            "train",
            *common,
            "trainer.total_steps=4",
            "optim.lr=1e-4",
            f"trainer.output_dir={out}",
            flag,
        )
        assert code == 0, err
        if out == run:
            assert _says(err, "resuming: the optimizer now uses optim.lr 0.001 -> 0.0001")
    assert _lrs(run)[2:] == _lrs(ref)[2:]  # the same schedule values, bit for bit
    assert _lrs(run)[0] == 10 * _lrs(ref)[0]  # steps 1-2 ran at the old lr
    assert "lr: 0.0001" in (run / "config.yaml").read_text()


def test_resume_without_config_yaml_checks_the_checkpoints_config(tmp_path):
    run = tmp_path / "run"
    common = [*SMALL, "trainer.save_every=2", f"trainer.output_dir={run}"]
    code, _, err = _main("train", *common, "trainer.total_steps=2")
    assert code == 0, err
    (run / "config.yaml").unlink()
    code, _, err = _main("train", *common, "trainer.total_steps=3", "optim.lr=0.01", "--resume")
    state = run / "checkpoints" / "step-000002" / "state.json"
    assert code == 2 and _says(err, f"config changed since {state} was written: optim.lr"), err
    assert _says(err, f"{run / 'config.yaml'} is missing: checking against the config in {state}")
    code, _, err = _main(
        "train", *common, "trainer.total_steps=3", "optim.lr=0.01", "--resume-force"
    )
    assert code == 0, err
    assert _lrs(run)[-1] == 0.01  # constant schedule: the new lr itself


# ----------------------------------------------------------------------------- environment


def test_a_full_disk_during_a_checkpoint_says_so_and_keeps_the_run_consistent(
    tmp_path, monkeypatch
):
    import e3rl.checkpoint as ckpt_mod

    run = tmp_path / "run"
    common = [*SMALL, "trainer.save_every=1", "trainer.total_steps=3", f"trainer.output_dir={run}"]
    real_save = torch.save

    def full_at_step_2(obj, path, *a, **k):
        if "step" in str(path) or len(list((run / "checkpoints").glob("step-*"))) >= 1:
            # what torch reports when the disk fills mid-write
            raise RuntimeError(
                "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing "
                "file data/3: file write failed"
            )
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", full_at_step_2)
    code, _, err = _main("train", *common)
    assert code == 2, err
    line = " ".join(err.split())
    assert "Traceback" not in err and "the disk is full" in line
    assert "step-000002 could not be written" in line and "older checkpoints are intact" in line
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]  # no .tmp left


def test_save_checkpoint_names_enospc(tmp_path):
    import errno

    from e3rl.checkpoint import CheckpointError, save_checkpoint

    class Full:
        def save_pretrained(self, path, **kw):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError, match="the disk is full: checkpoint .*step-000003"):
        save_checkpoint(tmp_path, 3, Full(), Full(), {}, {})
    assert not list((tmp_path / "checkpoints").iterdir())


def test_a_truncated_model_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("E3RL_CACHE", str(tmp_path / "cache"))
    args = [*SMALL, "trainer.total_steps=1"]
    code, _, err = _main("train", *args, f"trainer.output_dir={tmp_path / 'a'}")
    assert code == 0, err
    (entry,) = (tmp_path / "cache" / "base").iterdir()
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = _main("train", *args, f"trainer.output_dir={tmp_path / 'b'}")
    assert code == 0, err
    assert _says(err, f"the cached base model {entry} is unreadable (SafetensorError")
    assert _says(err, "rebuilding it")
    assert weights.stat().st_size > 1000  # rebuilt in place
    a = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])
    b = json.loads((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()[0])
    assert a["reward_mean"] == b["reward_mean"] and a["grad_norm"] == b["grad_norm"]


def test_an_unwritable_cache_names_e3rl_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("E3RL_CACHE", str(blocker))  # root ignores modes: a file blocks anyone
    code, _, err = _main("train", *SMALL, f"trainer.output_dir={tmp_path / 'run'}")
    assert code == 2
    assert _says(err, f"E3RL_CACHE={blocker}") and _says(err, "set E3RL_CACHE to a writable")


def test_report_without_matplotlib_gives_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    code, _, err = _main("report", str(tmp_path), "--out", str(tmp_path / "r"))
    assert code == 2 and "pip install 'e3rl[report]'" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA device")
def test_cuda_on_a_cpu_only_torch_is_a_config_error(tmp_path):
    code, _, err = _main("train", *SMALL, "trainer.device=cuda", f"trainer.output_dir={tmp_path}")
    assert code == 2 and _says(err, "trainer.device='cuda', but this torch") and "cpu" in err
