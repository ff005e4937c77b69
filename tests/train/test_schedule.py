"""The learning-rate schedule (`e3rl.train.run.make_scheduler`) against transformers' own."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from e3rl.config_io import load_config
from e3rl.train.run import make_scheduler

TOTAL, WARMUP, LR = 40, 7, 5e-5
REFERENCE = {
    "cosine": lambda opt: get_cosine_schedule_with_warmup(opt, WARMUP, TOTAL),
    "linear": lambda opt: get_linear_schedule_with_warmup(opt, WARMUP, TOTAL),
    "constant": lambda opt: get_constant_schedule_with_warmup(opt, WARMUP),
}


def _lrs(scheduler, optimizer) -> list[float]:
    out = []
    for _ in range(TOTAL):
        out.append(optimizer.param_groups[0]["lr"])  # the lr the step uses
        optimizer.step()
        scheduler.step()
    return out


def _ours(schedule: str, from_zero: bool) -> list[float]:
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"optim.schedule={schedule}",
            f"optim.warmup_steps={WARMUP}",
            f"optim.warmup_from_zero={str(from_zero).lower()}",
            f"optim.lr={LR}",
            f"trainer.total_steps={TOTAL}",
        ],
    )
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    return _lrs(make_scheduler(opt, cfg), opt)


@pytest.mark.parametrize("schedule", sorted(REFERENCE))
def test_warmup_from_zero_is_transformers_schedule(schedule):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    theirs = _lrs(REFERENCE[schedule](opt), opt)
    assert theirs[0] == 0.0
    assert _ours(schedule, True) == pytest.approx(theirs, rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("schedule", sorted(REFERENCE))
def test_default_warmup_moves_at_the_first_step_and_then_joins_transformers(schedule):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    theirs = _lrs(REFERENCE[schedule](opt), opt)
    ours = _ours(schedule, False)
    # one step ahead through the warm-up: lr * (step + 1) / warmup
    assert ours[:WARMUP] == pytest.approx([LR * (s + 1) / WARMUP for s in range(WARMUP)])
    assert ours[WARMUP:] == pytest.approx(theirs[WARMUP:], rel=1e-12, abs=1e-18)
