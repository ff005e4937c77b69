"""Moved to `e3rl.train` (loop, run, state, summary); these names stay for existing imports."""

from e3rl.train.loop import start_run, train, train_step
from e3rl.train.run import Run, build_run, load_data, make_control, validate
from e3rl.train.runlog import RunLogger

__all__ = [
    "Run",
    "RunLogger",
    "build_run",
    "load_data",
    "make_control",
    "start_run",
    "train",
    "train_step",
    "validate",
]
