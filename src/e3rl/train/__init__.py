"""Training: the loop (`loop`), the run's parts (`run`) and checkpointed state (`state`), the
policy update (`update`), checkpoints and resuming (`checkpoint`, `resume`), guards, the optimizer,
the run log and lock, the summary, and the one testing seam (`testing`).

`from e3rl.train import train` is the entry point; submodules are imported lazily so that
importing one piece (e.g. `e3rl.train.checkpoint`) does not load the whole loop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train", "train_step"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from e3rl.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'e3rl.train' has no attribute {name!r}")
