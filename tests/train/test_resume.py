"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends.

Kills land at random moments and, through the E3RL_TEST_KILL_AT hook (e3rl.killpoints), at
points a timer would rarely hit: inside a checkpoint write (complete in its temporary directory,
not renamed), between the rename and the pruning of old checkpoints, mid-way through a
metrics.jsonl line, during validation, and between the final model and summary.json. The kill
points are drawn from a seeded generator; a failure prints the seed and the points.
"""

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli import run_cli
from killrun import train_in_child
from safetensors.torch import load_file

from conftest import TINY
from e3rl import checkpoint as ckpt

TOTAL, SAVE_EVERY, EVAL_EVERY = 8, 2, 3
# Every piece of state the method adds: the value allocator (difficulty tracker, its rng) and
# the temperature controller. 12 prompts in batches of 4: epoch 2 allocates by difficulty, and
# the toy reward (level 1 always right, others a coin) gives the tracker something to track.
ARGS = [
    *TINY,
    "task.train_size=12",
    "reward.fn=toy_rewards:by_level",
    "budget.allocator=value",
    "budget.n_min=0",
    "budget.n_max=8",
    "rollout.temperature_control=entropy",
    f"trainer.total_steps={TOTAL}",
    f"trainer.save_every={SAVE_EVERY}",
    f"trainer.eval_every={EVAL_EVERY}",
    "data.val_limit=8",
    "--quiet",
]
# Selection: 8 candidates a step for 4 prompts' budget, so prompts wait in the control's pool.
SELECTION_ARGS = [*ARGS, "data.candidates_per_step=8", "budget.value_objective=mixed_rollouts"]
VOLATILE = ("time_plan", "time_generate", "time_reward", "time_update")


def _rows(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def _assert_same_run(run, straight, context=""):
    assert _rows(run) == _rows(straight), context  # no duplicated, missing or different rows
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(run / "final" / "model.safetensors")
    assert a.keys() == b.keys(), context
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs; {context}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == TOTAL, context


@pytest.fixture(scope="module", autouse=True)
def _helpers_on_path():
    """The toy reward lives in tests/helpers: subprocesses must find it too."""
    with pytest.MonkeyPatch.context() as mp:
        path = [str(Path(__file__).parents[1] / "helpers"), os.environ.get("PYTHONPATH")]
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
        yield


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    res = run_cli("train", *ARGS, f"trainer.output_dir={out}")
    assert res.returncode == 0, res.stderr
    rows = _rows(out)
    # The state under test really changes: otherwise a lost state could not be seen.
    assert len({r["temperature"] for r in rows}) > 2
    assert any(r["alloc_min"] != r["alloc_max"] for r in rows)
    assert sum("val_accuracy" in r for r in rows) == 3  # steps 3, 6 and the last
    return out


@pytest.fixture(scope="module")
def straight_selection(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight-selection")
    res = run_cli("train", *SELECTION_ARGS, f"trainer.output_dir={out}")
    assert res.returncode == 0, res.stderr
    assert all(r["prompts_rolled"] + r["prompts_skipped"] == 8 for r in _rows(out))
    return out


def _run(run, kill_at=None, resume=True, args=ARGS):
    """One `e3rl train` of `run` in a forked process (the imports are already paid for):
    its exit code, -9 when SIGKILL ended it."""
    argv = ["train", *args, f"trainer.output_dir={run}", *(["--resume"] if resume else [])]
    proc = multiprocessing.get_context("fork").Process(
        target=train_in_child, args=(argv, kill_at, str(run.parent / f"{run.name}.log"))
    )
    proc.start()
    proc.join(300)
    return proc.exitcode


def _newest(run) -> int:
    found = ckpt.list_checkpoints(run)
    return int(found[-1].name.split("-")[1]) if found else 0


def _candidates(point: str, after: int) -> list[int]:
    """Steps past `after` at which `point` happens in this config."""
    steps = range(after + 1, TOTAL + 1)
    if point.startswith("checkpoint"):
        return [s for s in steps if s % SAVE_EVERY == 0 or s == TOTAL]
    if point == "validation":
        return [s for s in steps if s % EVAL_EVERY == 0 or s == TOTAL]
    if point == "final-model":
        return [TOTAL]
    return list(steps)


def _check_landed(run, point, step, context):
    """The kill happened where it was aimed: the evidence each point leaves on disk."""
    root = run / ckpt.CKPT_DIR
    if point == "checkpoint-written":
        assert list(root.glob(".tmp-*")), context  # the complete, unrenamed checkpoint
        assert _newest(run) < step, context
    elif point == "checkpoint-renamed":
        assert _newest(run) == step, context
    elif point == "metrics-line":
        last = (run / "metrics.jsonl").read_text().splitlines()[-1]
        with pytest.raises(json.JSONDecodeError):
            json.loads(last)  # torn
    elif point == "final-model":
        assert (run / "final").is_dir() and not (run / "summary.json").exists(), context


def _kill_chain(run, points, seed, finish=True):
    """Starts a run, then kills it at each (point, random step) in turn, resuming in between;
    then (`finish`) resumes it to the end. Returns the (point, step) kills, for messages."""
    rng = random.Random(seed)
    done = []
    for i, point in enumerate(points):
        steps = _candidates(point, _newest(run))
        if not steps:  # an earlier kill landed late (e.g. at the last checkpoint)
            continue
        step = rng.choice(steps)
        done.append((point, step))
        context = f"seed={seed} kills={done}"
        code = _run(run, f"{point}:{step}", resume=i > 0)
        assert code == -signal.SIGKILL, f"exit {code}, not SIGKILL; {context}"
        _check_landed(run, point, step, context)
    if not finish:
        return done
    code = _run(run)
    assert code == 0, (code, (run.parent / f"{run.name}.log").read_text()[-3000:], done)
    return done


def test_sigkill_then_resume_is_bit_identical(tmp_path, straight):
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "e3rl.cli", "train", *ARGS, f"trainer.output_dir={crashed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = crashed / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill as soon as step 3 is logged: between checkpoints
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (crashed / "final").exists(), "the run finished before it could be killed"

    res = run_cli("train", *ARGS, f"trainer.output_dir={crashed}", "--resume")
    assert res.returncode == 0, res.stderr
    _assert_same_run(crashed, straight)

    res = run_cli("train", *ARGS, f"trainer.output_dir={crashed}", "--resume")
    assert res.returncode == 0 and "already finished" in res.stderr


def test_kills_inside_checkpoint_writes_and_log_lines(tmp_path, straight):
    """Three kills in one run: a checkpoint complete but not renamed, one renamed but older ones
    not pruned, then a torn metrics line or a validation; the resumed run is bit-identical."""
    seed = 20250
    third = random.Random(seed).choice(["metrics-line", "validation"])
    run = tmp_path / "run"
    kills = _kill_chain(run, ["checkpoint-written", "checkpoint-renamed", third], seed)
    _assert_same_run(run, straight, f"seed={seed} kills={kills}")
    assert not list((run / ckpt.CKPT_DIR).glob(".tmp-*")), "temporary directories left behind"
    assert len(ckpt.list_checkpoints(run)) == 2  # trainer.keep_checkpoints, pruned again


def test_kill_before_the_first_checkpoint_leaves_no_duplicate_rows(tmp_path, straight):
    """Killed with row 1 logged and no checkpoint yet: the resumed run starts over, and row 1
    is written once."""
    run = tmp_path / "run"
    assert _run(run, "metrics-line:2", resume=False) == -signal.SIGKILL
    assert _newest(run) == 0 and (run / "metrics.jsonl").read_text().count("\n") == 1
    assert _run(run) == 0
    _assert_same_run(run, straight)


def test_kill_between_final_model_and_summary(tmp_path, straight):
    """Killed after the last checkpoint and the final model: resume writes the summary instead
    of answering 'already finished' with none."""
    run = tmp_path / "run"
    assert _run(run, f"final-model:{TOTAL}", resume=False) == -signal.SIGKILL
    assert not (run / "summary.json").exists()
    assert _run(run) == 0
    _assert_same_run(run, straight)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_random_kill_sweep(tmp_path, straight, seed):
    """Four or five kills per run at random points and steps, then one at a random moment."""
    rng = random.Random(seed)
    points = rng.sample(["checkpoint-written", "checkpoint-renamed", "metrics-line"], 3)
    points.insert(rng.randrange(4), "validation")
    run = tmp_path / "run"
    kills = _kill_chain(run, points, seed, finish=False)
    # A kill at a random wall-clock moment of the next resume (start-up and loading included);
    # if the run ends first, it simply finished.
    argv = ["train", *ARGS, f"trainer.output_dir={run}", "--resume"]
    proc = multiprocessing.get_context("fork").Process(
        target=train_in_child, args=(argv, None, str(tmp_path / "timer.log"))
    )
    proc.start()
    time.sleep(rng.uniform(0.0, 2.0))
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    kills.append(("timer", proc.exitcode))
    if rng.random() < 0.5 and not (run / "summary.json").exists():
        kills.append(("final-model", TOTAL))
        assert _run(run, f"final-model:{TOTAL}") == -signal.SIGKILL, kills
    assert _run(run) == 0, kills
    _assert_same_run(run, straight, f"seed={seed} kills={kills}")


def test_a_fresh_run_never_appends_to_an_earlier_one(tmp_path):
    """Without --resume, an output directory holding a run is refused and left as it was; the
    demo picks the next free directory instead."""
    from e3rl.demo import _free_dir
    from e3rl.resume import ResumeError, check_fresh_start

    run = tmp_path / "run"
    check_fresh_start(run)  # absent: fine
    (run / "checkpoints").mkdir(parents=True)
    check_fresh_start(run)  # an empty checkpoints folder holds nothing
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(ResumeError, match="already holds a run .metrics.jsonl.*--resume"):
        check_fresh_start(run)
    assert (run / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert _free_dir(run) == tmp_path / "run-2"
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "summary.json").write_text("{}")
    assert _free_dir(run) == tmp_path / "run-3"


def _to_pre_control_layout(state: dict) -> dict:
    """A checkpoint payload as e3rl wrote it before e3rl.control: the tracker, the allocator's
    rng and the temperature controller kept apart, the length-bias warning in the run state."""
    control = state.pop("control")
    state["tracker"] = control["tracker"]
    state["alloc_rng"] = control["rng"]
    state["controller"] = control["controller"]
    state["state"]["length_bias_warned"] = control["length_bias_skipped"] > 0
    assert control["steps"] == state["state"]["step"] and control["epoch"] == state["epoch"]
    return state


def test_a_checkpoint_of_the_pre_control_layout_resumes_bit_identically(tmp_path, straight):
    run = tmp_path / "old-layout"
    assert _run(run, kill_at="checkpoint-renamed:4", resume=False) == -9
    path = run / ckpt.CKPT_DIR / "step-000004" / "state.json"
    path.write_text(json.dumps(_to_pre_control_layout(json.loads(path.read_text()))))
    assert _run(run) == 0
    _assert_same_run(run, straight, "resumed from a pre-control checkpoint")


def test_a_control_state_of_another_format_is_refused_saying_so(tmp_path):
    run = tmp_path / "new-format"
    assert _run(run, kill_at="checkpoint-renamed:2", resume=False) == -9
    path = run / ckpt.CKPT_DIR / "step-000002" / "state.json"
    state = json.loads(path.read_text())
    state["control"]["format"] = 99
    path.write_text(json.dumps(state))
    res = run_cli("train", *ARGS, f"trainer.output_dir={run}", "--resume")
    assert res.returncode != 0
    assert "format 99" in res.stderr and "checkpoint format changed" in res.stderr


def test_resume_mid_epoch_with_deferred_prompts_pending_is_bit_identical(
    tmp_path, straight_selection
):
    """Killed right after the step-4 checkpoint (mid-epoch: 12 prompts, 8 offered a step), with
    deferred prompts in the control's pool; the resumed run is the uninterrupted one."""
    run = tmp_path / "selection"
    assert _run(run, kill_at="checkpoint-renamed:4", resume=False, args=SELECTION_ARGS) == -9
    saved = json.loads((run / ckpt.CKPT_DIR / "step-000004" / "state.json").read_text())
    assert saved["control"]["pool"]["ids"], "nothing pending: the test would not test the pool"
    assert 0 < saved["position"] < 12 or saved["epoch"] > 0
    assert _run(run, args=SELECTION_ARGS) == 0
    _assert_same_run(run, straight_selection, "selection resumed at step 4")
    summaries = [json.loads((r / "summary.json").read_text()) for r in (run, straight_selection)]
    for key in ("frac_rollouts_mixed", "exp_frac_rollouts_mixed", "prompts_rolled"):
        assert summaries[0][key] == summaries[1][key], key
