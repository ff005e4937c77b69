"""The framework-free half of the TRL adapter: one generation round's prompts, counts and groups.

TRL's ``RepeatSampler`` hands ``_generate_and_score_completions`` a generation batch in which
each prompt fills ``num_generations`` consecutive rows. A round here re-splits exactly that many
rows over the round's prompts by e3rl's allocation: prompt ``i`` fills ``counts[i]`` consecutive
rows (0 drops it), so the total, and so TRL's split of the round into per-step slices, is
unchanged. Nothing here imports TRL: it is tested in the default suite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from e3rl.algos import group_advantages
from e3rl.config import ConfigError

__all__ = [
    "Round",
    "sampler_groups",
    "expand_rows",
    "ragged_advantages",
    "zero_std_fraction",
    "advantage_mode",
]

# TRL's ``scale_rewards`` -> e3rl's advantage estimator on groups of any size
_MODES = {"group": "grpo", "none": "drgrpo"}


def advantage_mode(scale_rewards: Any) -> str:
    """e3rl's estimator for TRL's ``scale_rewards`` ('group' -> grpo, 'none' -> Dr. GRPO)."""
    key = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)
    if key not in _MODES:
        raise ConfigError(
            f"GRPOConfig.scale_rewards={scale_rewards!r} is invalid with e3rl: expected 'group' "
            "(GRPO: (r - mean) / std per prompt group) or 'none' (Dr. GRPO: r - mean). 'batch' "
            "scales by the std of the whole batch, which e3rl's ragged-group estimators do not offer"
        )
    return _MODES[key]


def sampler_groups(
    rows: Sequence[Mapping[str, Any]], group_size: int, key: Callable[[Mapping[str, Any]], str]
) -> list[tuple[int, str]]:
    """(first row, prompt id) of each block of ``group_size`` equal prompts, in order.

    Raises if the batch is not made of such blocks (what ``RepeatSampler`` and TRL's iterable
    dataset wrapper produce): re-splitting any other batch would mix prompts.
    """
    if group_size < 1 or len(rows) % group_size:
        raise RuntimeError(
            f"a generation batch of {len(rows)} rows is not a whole number of groups of "
            f"num_generations={group_size}"
        )
    slots = []
    for start in range(0, len(rows), group_size):
        ids = {key(rows[j]) for j in range(start, start + group_size)}
        if len(ids) != 1:
            raise RuntimeError(
                f"rows {start}..{start + group_size - 1} of the generation batch hold {len(ids)} "
                "different prompts: e3rl needs TRL's RepeatSampler order (each prompt in "
                "num_generations consecutive rows)"
            )
        slots.append((start, ids.pop()))
    return slots


def expand_rows(
    rows: Sequence[Mapping[str, Any]], firsts: Sequence[int], counts: Sequence[int]
) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of the round (``counts[g]`` copies of row ``firsts[g]``) and each row's group index.

    Copies are shallow dicts: TRL writes per-row fields into them (``extra_fields``), and one
    shared dict would make every copy of a prompt see the last write.
    """
    out: list[dict[str, Any]] = []
    group: list[int] = []
    for g, (first, count) in enumerate(zip(firsts, counts, strict=True)):
        if count < 0:
            raise ValueError(f"count {count} for group {g} is negative")
        out.extend(dict(rows[first]) for _ in range(count))
        group.extend([g] * count)
    return out, group


def ragged_advantages(rewards: torch.Tensor, group_ids: Sequence[int], mode: str) -> torch.Tensor:
    """e3rl's advantages on groups of any size; a NaN reward (unscorable) gets 0 and is left
    out of its group's statistics, as TRL does with nan-aware means."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
    groups = torch.as_tensor(list(group_ids), dtype=torch.long)
    adv = torch.zeros_like(rewards)
    ok = ~torch.isnan(rewards)
    if ok.any():
        adv[ok] = group_advantages(rewards[ok], groups[ok], mode=mode)
    return adv


def zero_std_fraction(rewards: Sequence[float], group_ids: Sequence[int]) -> float:
    """Fraction of groups whose (finite) rewards are all equal: TRL's ``frac_reward_zero_std``
    on the real groups rather than on ``view(-1, num_generations)`` blocks."""
    by_group: dict[int, list[float]] = {}
    for r, g in zip(rewards, group_ids, strict=True):
        if not math.isnan(r):
            by_group.setdefault(g, []).append(r)
    if not by_group:
        return math.nan
    flat = sum(max(v) - min(v) <= 1e-12 for v in by_group.values())
    return flat / len(by_group)


@dataclass
class Round:
    """What one generation round needs between allocation, scoring and the loss passes."""

    prompt_ids: list[str]
    """Stable id of each group's prompt (one per distinct sampler group)."""
    counts: list[int]
    ranks: list[float]
    """Each group's difficulty rank when it was allocated (what the length bias uses)."""
    group_of_row: list[int]
    temperature: float
    advantages: torch.Tensor | None = None
    zero_std: float = math.nan
    entropy_sum: float = 0.0
    entropy_tokens: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)

    def row_prompt_ids(self) -> list[str]:
        return [self.prompt_ids[g] for g in self.group_of_row]

    def row_ranks(self) -> list[float]:
        return [self.ranks[g] for g in self.group_of_row]

    def add_entropy(self, total: float, tokens: float) -> None:
        self.entropy_sum += float(total)
        self.entropy_tokens += float(tokens)

    def entropy(self) -> float:
        """Token-weighted mean entropy over the round's first pass (NaN if none was seen)."""
        return self.entropy_sum / self.entropy_tokens if self.entropy_tokens > 0 else math.nan
