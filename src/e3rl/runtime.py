"""What `e3rl train` and `e3rl eval` build the same way from a config: the device, the reward
runner of a data source, the rollout engine."""

from __future__ import annotations

import torch

from e3rl.config import Config, ConfigError
from e3rl.data import parse_source
from e3rl.precision import compute_dtype
from e3rl.rewards import RewardRunner, resolve_reward
from e3rl.rewards.runner import needs_isolation
from e3rl.rollout.hf import HFEngine

__all__ = ["make_engine", "make_reward", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``trainer.device``: 'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name!r}, but this torch {torch.__version__} sees no CUDA device "
            "(a CPU-only build, or no GPU visible): use trainer.device=cpu or auto"
        )
    return torch.device(name)


def make_reward(cfg: Config, source: str, fn: str | None = None) -> RewardRunner:
    """The reward runner for prompts from ``source``: ``fn`` (default ``reward.fn``), where
    'auto' picks the checker of the source's task ('arith:train' -> arith's)."""
    parsed = parse_source(source)
    reward_fn = resolve_reward(fn or cfg.reward.fn, parsed[0] if parsed else None)
    return RewardRunner(reward_fn, cfg.reward.timeout, isolate=needs_isolation(reward_fn))


def make_engine(cfg: Config, model, tokenizer, generator: torch.Generator, name: str | None = None):
    """The rollout engine ``name`` (default ``rollout.engine``) over ``model``, sampling from
    ``generator``; forward passes autocast to ``model.dtype`` over float32 weights."""
    if (name or cfg.rollout.engine) == "vllm":  # optional extra: imported only when chosen
        from e3rl.rollout.vllm import VLLMEngine

        return VLLMEngine.from_config(cfg, model, tokenizer, generator)
    return HFEngine(
        model,
        tokenizer,
        cfg.rollout.micro_batch_size,
        generator,
        autocast_dtype=compute_dtype(cfg.model.dtype),
        lean_decode=cfg.rollout.lean_decode,
    )
