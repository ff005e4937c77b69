"""A run killed with SIGKILL and resumed ends exactly where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from conftest import TINY
from test_cli import run_cli

# Every piece of state the method adds: value allocator (tracker), temperature controller.
ARGS = [
    *TINY,
    "budget.allocator=value",
    "budget.n_min=0",
    "budget.n_max=8",
    "rollout.temperature_control=entropy",
    "trainer.total_steps=8",
    "trainer.save_every=2",
    "--quiet",
]
VOLATILE = ("time_generate", "time_reward", "time_update")


def _rows(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert run_cli("train", *ARGS, f"trainer.output_dir={straight}").returncode == 0

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
    assert _rows(crashed) == _rows(straight)  # no duplicated, missing or different rows
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(crashed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    res = run_cli("train", *ARGS, f"trainer.output_dir={crashed}", "--resume")
    assert res.returncode == 0 and "already finished" in res.stderr
