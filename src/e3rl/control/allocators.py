"""Allocators: the per-step objects the controller calls, one per ``budget.allocator`` name.

Allocators hold only their config: the schedule is a pure function of ``epoch``/``step`` and the
difficulty lives in the tracker, so only the tracker needs checkpointing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from e3rl.control.allocation import (
    check_bounds,
    fit_beta_prior,
    rank_allocation,
    value_allocation_beta,
)
from e3rl.control.tracker import DifficultyTracker

__all__ = [
    "ALLOCATORS",
    "Allocator",
    "RankAllocator",
    "RankSchedule",
    "UniformAllocator",
    "ValueAllocator",
    "allocation_stats",
    "allocator_from_config",
    "current_prior",
    "make_allocator",
]


@dataclass(frozen=True)
class RankSchedule:
    """The paper's widening bounds: ``(n, n)`` in epoch 0, then after each epoch
    ``n_min <- max(n_min - n_update, n_low)`` and ``n_max <- min(n_max + n_update, n_high)``."""

    n: int = 8
    n_low: int = 4
    n_high: int = 12
    n_update: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.n_low <= self.n <= self.n_high or self.n_update < 0:
            raise ValueError(
                f"need 0 <= n_low <= n <= n_high and n_update >= 0, got n={self.n}, "
                f"n_low={self.n_low}, n_high={self.n_high}, n_update={self.n_update}"
            )

    def bounds(self, epoch: int) -> tuple[int, int]:
        """(n_min, n_max) in 0-based ``epoch``."""
        k = max(int(epoch), 0) * self.n_update
        return max(self.n - k, self.n_low), min(self.n + k, self.n_high)

    def bounds_at(self, step: int, steps_per_widening: int) -> tuple[int, int]:
        """Same widening, once every ``steps_per_widening`` steps instead of once per epoch."""
        if steps_per_widening <= 0:
            raise ValueError(f"steps_per_widening must be > 0, got {steps_per_widening}")
        return self.bounds(int(step) // steps_per_widening)


class Allocator(Protocol):
    """Per-step rollout counts for a batch; ``sum(counts) == budget``. ``step`` is the 1-based
    number of the step being planned, ``epoch`` the 0-based epoch it is in."""

    @classmethod
    def from_config(cls, b: Any, n: int) -> Allocator: ...

    def allocate(
        self,
        prompt_ids: Sequence[str],
        budget: int,
        tracker: DifficultyTracker,
        epoch: int,
        step: int,
        rng: np.random.Generator,
    ) -> list[int]: ...


@dataclass(frozen=True)
class UniformAllocator:
    """Plain GRPO: ``n`` rollouts for every prompt (``budget`` must be ``n * B``)."""

    n: int = 8

    @classmethod
    def from_config(cls, b: Any, n: int) -> UniformAllocator:
        return cls(n=n)

    def allocate(self, prompt_ids, budget, tracker, epoch, step, rng) -> list[int]:
        check_bounds(len(prompt_ids), budget, self.n, self.n)
        return [self.n] * len(prompt_ids)


@dataclass(frozen=True)
class RankAllocator:
    """The paper's rank rule (fixed) with the widening :class:`RankSchedule`, per epoch or, when
    ``steps_per_widening`` is set, every that many steps. Flat fields so configs map 1:1."""

    n: int = 8
    n_low: int = 4
    n_high: int = 12
    n_update: int = 2
    steps_per_widening: int | None = None
    leftover: str = "greedy"

    @classmethod
    def from_config(cls, b: Any, n: int) -> RankAllocator:
        return cls(n, b.n_low, b.n_high, b.n_update, b.widen_every or None, b.rank_leftover)

    @property
    def schedule(self) -> RankSchedule:
        return RankSchedule(self.n, self.n_low, self.n_high, self.n_update)

    def __post_init__(self) -> None:
        _ = self.schedule  # validate eagerly

    def bounds(self, epoch: int, step: int) -> tuple[int, int]:
        if self.steps_per_widening is None:
            return self.schedule.bounds(epoch)
        return self.schedule.bounds_at(step, self.steps_per_widening)

    def allocate(self, prompt_ids, budget, tracker, epoch, step, rng) -> list[int]:
        tracker.register(prompt_ids)
        n_min, n_max = self.bounds(epoch, step)
        return rank_allocation(tracker.ranks(prompt_ids), budget, n_min, n_max, self.leftover)


@dataclass(frozen=True)
class ValueAllocator:
    """:func:`value_allocation` on the tracker's beliefs (:meth:`DifficultyTracker.beliefs`: by
    default its live (decayed) counts, whatever its rank mode); ``prior_fit``: under the Beta prior
    fitted to all tracked prompts (:func:`fit_beta_prior`, ``prior`` until enough are seen)
    instead of ``prior``."""

    n_min: int = 0
    n_max: int = 16
    prior: tuple[float, float] = (1.0, 1.0)
    recheck_prob: float = 0.05
    objective: str = "mixed"
    prior_fit: bool = False

    @classmethod
    def from_config(cls, b: Any, n: int) -> ValueAllocator:
        return cls(b.n_min, b.n_max, tuple(b.prior), b.recheck_prob, b.value_objective, b.prior_fit)

    def prior_for(self, tracker: DifficultyTracker) -> tuple[float, float]:
        """The Beta prior this step plans under."""
        return current_prior(self.prior, self.prior_fit, tracker)

    def allocate(self, prompt_ids, budget, tracker, epoch, step, rng) -> list[int]:
        tracker.register(prompt_ids)
        a, b = tracker.beliefs(prompt_ids, self.prior_for(tracker))
        return value_allocation_beta(
            a, b, budget, self.n_min, self.n_max, self.recheck_prob, rng, self.objective
        )


def current_prior(
    prior: tuple[float, float], fit: bool, tracker: DifficultyTracker
) -> tuple[float, float]:
    """``prior``, or with ``fit`` the Beta prior fitted to every prompt the tracker holds."""
    if not fit:
        return float(prior[0]), float(prior[1])
    return fit_beta_prior(*tracker.counts(), fallback=prior)


ALLOCATORS: dict[str, type[Allocator]] = {
    "uniform": UniformAllocator,
    "rank": RankAllocator,
    "value": ValueAllocator,
}


def make_allocator(name: str, **kwargs: Any) -> Allocator:
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; valid names: {sorted(ALLOCATORS)}")
    return ALLOCATORS[name](**kwargs)


def allocator_from_config(b: Any, n: int) -> Allocator:
    """The allocator a `BudgetConfig` (`budget.*`) names, spending `n` rollouts per prompt on
    average."""
    if b.allocator not in ALLOCATORS:
        raise ValueError(f"unknown allocator {b.allocator!r}; valid names: {sorted(ALLOCATORS)}")
    return ALLOCATORS[b.allocator].from_config(b, n)


def allocation_stats(counts: Sequence[int]) -> dict[str, Any]:
    """min / mean / max / total rollouts per prompt and a histogram ``{n: number of prompts}``."""
    c = [int(x) for x in counts]
    if not c:
        return {"min": 0, "mean": 0.0, "max": 0, "total": 0, "hist": {}}
    return {
        "min": min(c),
        "mean": sum(c) / len(c),
        "max": max(c),
        "total": sum(c),
        "hist": dict(sorted(Counter(c).items())),
    }
