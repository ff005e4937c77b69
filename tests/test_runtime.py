"""e3rl.runtime: what train and eval build alike from a config."""

from __future__ import annotations

import pytest
import torch

from e3rl.config import Config, ConfigError
from e3rl.rewards.checkers import REWARDS, math_reward
from e3rl.runtime import make_reward, resolve_device


def test_resolve_device_keeps_the_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    monkeypatch.undo()
    assert resolve_device("cpu") == torch.device("cpu")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == want


def test_make_reward_picks_the_sources_checker():
    cfg = Config()
    runner = make_reward(cfg, "arith:train")
    try:
        assert runner.fn is REWARDS["arith"]
    finally:
        runner.close()
    for source, fn in (("data/x.jsonl", None), ("arith:val", "math")):
        runner = make_reward(cfg, source, fn)
        try:
            assert runner.fn is math_reward
        finally:
            runner.close()


def test_cuda_on_a_cpu_only_torch_names_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="trainer.device='cuda:0'"):
        resolve_device("cuda:0")
