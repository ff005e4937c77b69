"""The method, framework-free: difficulty tracking, rollout allocation, entropy-targeting
temperature and length bias, driven through one object, :class:`E3Control`.

* :mod:`~e3rl.control.tracker` -- per-prompt difficulty (:class:`DifficultyTracker`).
* :mod:`~e3rl.control.allocation` -- the allocation rules (:func:`rank_allocation`,
  :func:`value_allocation`).
* :mod:`~e3rl.control.allocators` -- the per-step allocators, by name (:data:`ALLOCATORS`).
* :mod:`~e3rl.control.forecast` -- :class:`TransitionForecast`, a prompt's pass rate at its next
  visit from how earlier prompts moved (``budget.forecast=transition``).
* :mod:`~e3rl.control.temperature` -- :class:`EntropyTemperatureController`.
* :mod:`~e3rl.control.length_bias` -- :func:`length_biased_rewards`.
* :mod:`~e3rl.control.controller` -- :class:`E3Control`, what e3rl's trainer and the framework
  adapters call once per step.
"""

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
from e3rl.control.controller import E3Control, Plan
from e3rl.control.length_bias import length_biased_rewards
from e3rl.control.temperature import EntropyTemperatureController
from e3rl.control.tracker import DifficultyTracker

__all__ = [
    "ALLOCATORS",
    "OBJECTIVES",
    "RANK_LEFTOVER",
    "Allocator",
    "DifficultyTracker",
    "E3Control",
    "EntropyTemperatureController",
    "Plan",
    "RankAllocator",
    "RankSchedule",
    "UniformAllocator",
    "ValueAllocator",
    "allocation_stats",
    "allocator_from_config",
    "beta_power_moments",
    "expected_mixed",
    "length_biased_rewards",
    "make_allocator",
    "rank_allocation",
    "value_allocation",
]
