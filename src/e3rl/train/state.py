"""RunState: everything a checkpoint saves besides the model, as one object.

Its `state_dict` is the checkpoint's payload: the keys of `TORCH_KEYS` go to `optim.pt`
(tensors), the rest to `state.json`. The layout is the one checkpoints have always had, so a
checkpoint written before this module resumes unchanged; one from before `e3rl.control` is
mapped by `control_state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from e3rl.control import E3Control
from e3rl.control.controller import CONTROL_STATE_FORMAT
from e3rl.data import Batches, PromptStream
from e3rl.train import checkpoint as ckpt

# Entries of the state dict saved with torch (optim.pt); the others are JSON (state.json).
TORCH_KEYS = ("optimizer", "scheduler", "rng")


@dataclass
class RunState:
    """The training state that a resumed run needs to go on bit for bit."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: torch.Generator
    control: E3Control
    batches: Batches | PromptStream
    config: dict[str, Any]  # the run's config, kept in every checkpoint
    step: int = 0
    cum_rollouts: int = 0
    cum_tokens: int = 0
    base_val_accuracy: float | None = None

    def counters(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "cum_rollouts": self.cum_rollouts,
            "cum_tokens": self.cum_tokens,
            "base_val_accuracy": self.base_val_accuracy,
        }

    def advance(self, step: int, rollouts: int, tokens: int) -> None:
        """Counts a finished step."""
        self.step = step
        self.cum_rollouts += rollouts
        self.cum_tokens += tokens

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(self.sampler),
            "state": self.counters(),
            "epoch": self.batches.epoch,
            "position": self.batches.position,
            "control": self.control.state_dict(),
            "config": self.config,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restores a `state_dict` (or a checkpoint's two files merged); a missing or malformed
        entry raises KeyError, TypeError or ValueError (the caller names the checkpoint)."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        ckpt.set_rng_state(saved["rng"], self.sampler)
        self.control.load_state_dict(control_state(saved))
        self.batches.epoch, self.batches.position = saved["epoch"], saved["position"]
        counters = saved["state"]
        self.step = counters["step"]
        self.cum_rollouts = counters["cum_rollouts"]
        self.cum_tokens = counters["cum_tokens"]
        self.base_val_accuracy = counters.get("base_val_accuracy")

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(optim.pt part, state.json part) of the state dict."""
        full = self.state_dict()
        return {k: full.pop(k) for k in TORCH_KEYS}, full


def control_state(saved: dict[str, Any]) -> dict[str, Any]:
    """The E3Control state of a checkpoint's payload. Checkpoints written before e3rl.control
    kept the tracker, the allocator's rng and the temperature controller apart: mapped here."""
    if "control" in saved:
        return saved["control"]
    if "tracker" not in saved or "alloc_rng" not in saved:
        raise KeyError("neither 'control' nor the older 'tracker' and 'alloc_rng' entries")
    return {
        "format": CONTROL_STATE_FORMAT,
        "tracker": saved["tracker"],
        "controller": saved.get("controller"),
        "rng": saved["alloc_rng"],
        "epoch": saved["epoch"],
        "steps": saved["state"]["step"],
        "length_bias_skipped": int(bool(saved["state"].get("length_bias_warned"))),
    }
