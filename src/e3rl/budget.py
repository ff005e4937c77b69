"""Kept so that ``from e3rl.budget import ...`` works: the rollout budget lives in
:mod:`e3rl.control` (tracker, allocation rules, allocators)."""

from e3rl.control.allocation import (
    OBJECTIVES,
    RANK_LEFTOVER,
    beta_power_moments,
    expected_mixed,
    rank_allocation,
    value_allocation,
)
from e3rl.control.allocators import (
    ALLOCATORS,
    Allocator,
    RankAllocator,
    RankSchedule,
    UniformAllocator,
    ValueAllocator,
    allocation_stats,
    allocator_from_config,
    make_allocator,
)
from e3rl.control.tracker import DifficultyTracker

__all__ = [
    "ALLOCATORS",
    "OBJECTIVES",
    "RANK_LEFTOVER",
    "Allocator",
    "DifficultyTracker",
    "RankAllocator",
    "RankSchedule",
    "UniformAllocator",
    "ValueAllocator",
    "allocation_stats",
    "allocator_from_config",
    "beta_power_moments",
    "expected_mixed",
    "make_allocator",
    "rank_allocation",
    "value_allocation",
]
