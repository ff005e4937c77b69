"""Runs `e3rl train` in a forked process (imports already paid for), optionally SIGKILLed at an
E3RL_TEST_KILL_AT point, and compares two run directories bit for bit."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

import e3rl.trainer  # noqa: F401  (imported once here, so each forked run starts at once)

VOLATILE = ("time_plan", "time_generate", "time_reward", "time_update")
KILL_ENV = "E3RL_TEST_KILL_AT"


def train_in_child(argv: list[str], kill_at: str | None, log_path: str) -> None:
    """The CLI's main() in this forked process, killed by itself at `kill_at` if given."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.pop(KILL_ENV, None)
    if kill_at:
        os.environ[KILL_ENV] = kill_at
    from e3rl.cli import main

    os._exit(main(argv))


def run_train(args: list[str], run: Path, kill_at: str | None = None, resume: bool = False) -> int:
    """Exit code of `e3rl train ARGS trainer.output_dir=RUN [--resume]`; -9 when SIGKILLed."""
    argv = ["train", *args, f"trainer.output_dir={run}", *(["--resume"] if resume else [])]
    proc = multiprocessing.get_context("fork").Process(
        target=train_in_child, args=(argv, kill_at, str(run.parent / f"{run.name}.log"))
    )
    proc.start()
    proc.join(600)
    return proc.exitcode


def log_of(run: Path) -> str:
    path = run.parent / f"{run.name}.log"
    return path.read_text()[-4000:] if path.is_file() else ""


def rows(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in VOLATILE} for x in lines]


def assert_same_run(run: Path, straight: Path, context: str = "") -> None:
    """Same metrics rows (none missing or doubled) and bit-identical final weights."""
    assert rows(run) == rows(straight), context
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(run / "final" / "model.safetensors")
    assert a.keys() == b.keys(), context
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs; {context}"
