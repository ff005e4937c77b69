"""e3rl's trainer on CUDA (skipped without a GPU; scripts/gpu_check.py runs them on one and fails
if they skip there): a short run in float32 and bf16 mixed precision keeps the budget, skips no
update and steers the temperature; one update on CUDA moves the weights as on CPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import TINY
from e3rl.config import AlgoConfig
from e3rl.config_io import load_config
from e3rl.rollout.hf import HFEngine
from e3rl.trainer import train
from e3rl.update import policy_update

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_short_run_on_cuda_keeps_the_budget_and_steers_the_temperature(tmp_path, dtype):
    cfg = load_config(
        None,
        [
            *TINY,
            "trainer.device=cuda",
            f"model.dtype={dtype}",
            "rollout.temperature_control=entropy",
            "temperature.warmup_steps=1",
            "trainer.total_steps=4",
            "data.val=null",
            f"trainer.output_dir={tmp_path}",
        ],
    )
    summary = train(cfg, quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 4 and len(rows) == 4
    assert all(r["rollouts"] == cfg.data.batch_size * cfg.rollout.n for r in rows)
    assert all(r["skipped_updates"] == 0 and r["loss"] == r["loss"] for r in rows)  # finite
    assert rows[0]["temperature"] == rows[1]["temperature"] == 1.0  # warm-up step
    assert len({r["temperature"] for r in rows}) > 1  # then the controller moves it
    for prev, cur in zip(rows, rows[1:], strict=False):
        assert cur["temperature"] == prev["next_temperature"]


def test_one_update_on_cuda_moves_the_weights_as_on_cpu(tiny):
    model, tok, problems = tiny
    prompts = [
        tok(p.question, add_special_tokens=False)["input_ids"] for p in problems["train"][:3]
    ]
    r = HFEngine(model, tok, 16, torch.Generator().manual_seed(2)).generate(
        prompts, [3, 3, 2], 1.0, 8
    )
    adv = torch.linspace(-1.0, 1.0, len(r))
    deltas = []
    for device in ("cpu", "cuda"):
        m = copy.deepcopy(model).to(device)
        before = torch.cat([p.detach().flatten().cpu() for p in m.parameters()])
        opt = torch.optim.SGD(m.parameters(), lr=1.0)  # the weight change is the gradient
        policy_update(m, opt, r, adv, 1.0, AlgoConfig(micro_batch_size=4), grad_clip=0.0)
        deltas.append(torch.cat([p.detach().flatten().cpu() for p in m.parameters()]) - before)
    cpu, cuda = deltas
    assert cpu.norm() > 0
    assert (cuda - cpu).norm() <= 1e-4 * cpu.norm()
