"""Choosing which prompts get rollouts at all: more candidates per step than prompts rolled.

A step is offered ``C`` candidates (``data.candidates_per_step``) and spends the usual budget
``n * batch_size`` over them; a candidate that gets 0 rollouts is *deferred*, not consumed: it
stays pending and must be offered again at the next step, ahead of fresh prompts. Two things keep
every prompt in play:

* the **deferral bound** ``max_deferrals = D``: a candidate already deferred ``D`` times in a row
  is *forced*: it gets rollouts at this step (at least ``max(n_min, 2)`` with the value
  allocator, ``n`` with uniform, its rank share with rank), so every prompt offered is rolled
  within ``D + 1`` offers;
* **re-checks**: each other candidate is, with probability ``recheck_prob``, treated as forced
  too, so that the estimates of prompts that keep losing stay fresh (a prompt skipped for ever
  would never change its estimate).

Which candidates get how many, by allocator:

* ``value`` -- the exact optimum of the expected value of the step's groups
  (:func:`~e3rl.control.allocation.value_allocation`'s objective) over all candidates, each
  getting 0 or a count in ``[n_min, n_max]`` (forced ones: in ``[max(n_min, 2), n_max]``), by
  dynamic programming;
* ``uniform`` -- the ``budget // n`` candidates whose group of ``n`` has the highest expected
  value (forced first), ``n`` each;
* ``rank`` -- the same choice, then the paper's rank rule over the chosen prompts.

The bound holds by construction when the forced candidates always fit, which the settings
guarantee (:func:`e3rl.config.check_selection`): with uniform/rank ``C <= 2 * batch_size`` (at most
``C - batch_size`` candidates wait, and ``batch_size`` are rolled), with value
``C * max(n_min, 2) <= budget`` (every candidate could be forced at once).

Everything is numpy + stdlib; the pool's state is plain Python values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from e3rl.control.allocation import (
    OBJECTIVES,
    check_bounds,
    group_values,
    rank_allocation,
    solve_dp_allowed,
)
from e3rl.control.allocators import Allocator, RankAllocator, UniformAllocator, ValueAllocator
from e3rl.control.tracker import DifficultyTracker

__all__ = [
    "CandidatePool",
    "SELECTING_ALLOCATORS",
    "choose_counts",
    "forced_room",
    "mixed_shares",
]

SELECTING_ALLOCATORS = ("uniform", "rank", "value")
"""Allocators that can choose among more candidates than they fund."""


def mixed_shares(a: Any, b: Any, counts: Sequence[int], n: int) -> tuple[float, float]:
    """Expected share of rollouts in mixed groups (a) with ``counts`` and (b) with ``n`` each on
    a batch drawn uniformly from these prompts, both under the prompts' Beta(a, b) beliefs.

    (b) is what uniform GRPO would spend on average: ``mean_i P_mixed_i(n)``."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if len(c) == 0 or c.sum() == 0:
        return float("nan"), float("nan")
    v = group_values(a, b, max(int(c.max()), int(n)), "mixed")
    rows = np.arange(len(c))
    chosen = float((c * v[rows, c]).sum() / c.sum())
    return chosen, float(v[:, int(n)].mean())


def forced_room(allocator: Allocator, budget: int) -> int:
    """How many forced candidates ``budget`` can roll: at ``max(n_min, 2)`` each with the value
    allocator, at ``n`` each (the chosen set's size) with uniform and rank."""
    if isinstance(allocator, ValueAllocator):
        return budget // max(allocator.n_min, 2)
    if isinstance(allocator, (UniformAllocator, RankAllocator)):
        return budget // max(allocator.n, 1)
    raise ValueError(
        f"selecting among candidates needs one of the allocators {list(SELECTING_ALLOCATORS)}, "
        f"got {type(allocator).__name__}"
    )


def _top_by_value(values: np.ndarray, forced: np.ndarray, harder: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` candidates to roll: forced first (in position order, the oldest
    first since pending prompts come first), then by value, ties to the harder, then position."""
    pos = np.arange(len(values))
    order = np.lexsort((pos, harder, -values, ~forced))
    return np.sort(order[:k])


def choose_counts(
    allocator: Allocator,
    prompt_ids: Sequence[str],
    budget: int,
    forced: np.ndarray,
    tracker: DifficultyTracker,
    epoch: int,
    step: int,
    prior: Sequence[float],
    objective: str,
) -> list[int]:
    """Rollouts per candidate (0 = deferred), ``sum == budget``; every ``forced`` candidate gets
    some (the caller keeps their number within what the budget can roll)."""
    ids = list(prompt_ids)
    forced = np.asarray(forced, dtype=bool)
    tracker.register(ids)
    if isinstance(allocator, ValueAllocator):
        a, b = tracker.beliefs(ids, allocator.prior_for(tracker))
        return _choose_value(allocator, a, b, budget, forced)
    if isinstance(allocator, (UniformAllocator, RankAllocator)):
        n = allocator.n
        if n <= 0 or budget % n:
            raise ValueError(f"budget={budget} is not a multiple of n={n} rollouts per prompt")
        k = budget // n
        if k > len(ids):
            raise ValueError(f"budget={budget} needs {k} prompts at n={n}, got {len(ids)}")
        a, b = tracker.beliefs(ids, prior)
        v = group_values(a, b, n, objective)[:, n]
        chosen = _top_by_value(v, forced, a / (a + b), k)
        counts = np.zeros(len(ids), dtype=np.int64)
        if isinstance(allocator, UniformAllocator):
            counts[chosen] = n
        else:
            lo, hi = allocator.bounds(epoch, step)
            ranks = tracker.ranks([ids[i] for i in chosen])
            counts[chosen] = rank_allocation(ranks, budget, lo, hi, allocator.leftover)
        return counts.tolist()
    raise ValueError(
        f"selecting among candidates needs one of the allocators {list(SELECTING_ALLOCATORS)}, "
        f"got {type(allocator).__name__}"
    )


def _choose_value(
    allocator: ValueAllocator, a: np.ndarray, b: np.ndarray, budget: int, forced: np.ndarray
) -> list[int]:
    """Exact maximum of the summed group values, each candidate at 0 or in [n_min, n_max],
    forced ones in [max(n_min, 2), n_max]."""
    n_min, n_max = allocator.n_min, allocator.n_max
    check_bounds(len(a), budget, 0, n_max)
    gains = OBJECTIVES[allocator.objective](a, b, n_max)
    cs = np.arange(n_max + 1)
    free = (cs == 0) | ((cs >= max(n_min, 1)) & (cs <= n_max))
    must = (cs >= max(n_min, 2)) & (cs <= n_max)
    allowed = np.where(forced[:, None], must[None, :], free[None, :])
    # Ties prefer the harder prompt, then the less-known, then position (as value_allocation).
    order = np.lexsort((np.arange(len(a)), a + b, a / (a + b)))
    counts = solve_dp_allowed(gains, allowed, budget, order)
    if int(counts.sum()) != budget:  # only when the forced candidates cannot all be funded
        raise ValueError(
            f"budget={budget} cannot be spent over {len(a)} candidates each at 0 or in "
            f"[{n_min}, {n_max}], the {int(forced.sum())} forced ones at {max(n_min, 2)} or more"
        )
    return counts.tolist()


class CandidatePool:
    """The deferred candidates, oldest first, each with the number of times in a row it got 0.

    ``max_deferrals`` bounds that number: a candidate deferred that many times is forced at its
    next offer. :meth:`settle` records a step's outcome: candidates given rollouts leave the pool
    (consumed), the others stay (or enter) with one more deferral, in offer order after the ones
    already waiting.
    """

    def __init__(self, max_deferrals: int) -> None:
        if max_deferrals < 1:  # 0 would force every candidate: nothing left to choose
            raise ValueError(f"max_deferrals must be >= 1, got {max_deferrals}")
        self.max_deferrals = int(max_deferrals)
        self._deferrals: dict[str, int] = {}  # insertion order = oldest first

    def __len__(self) -> int:
        return len(self._deferrals)

    def pending(self) -> list[str]:
        """Deferred ids, oldest first: they must lead the next step's candidates."""
        return list(self._deferrals)

    def deferrals(self, prompt_ids: Sequence[str]) -> list[int]:
        return [self._deferrals.get(p, 0) for p in prompt_ids]

    def check_offer(self, prompt_ids: Sequence[str]) -> None:
        """Every pending id must be offered again (else its bound could not be kept), once."""
        if len(set(prompt_ids)) != len(prompt_ids):
            dup = sorted({p for p in prompt_ids if list(prompt_ids).count(p) > 1})
            raise ValueError(f"candidates must be distinct; repeated ids {dup[:5]}")
        missing = [p for p in self._deferrals if p not in set(prompt_ids)]
        if missing:
            raise ValueError(
                f"{len(missing)} deferred prompts were not offered again (e.g. {missing[:3]}): "
                "the candidates of a step must include every pending id (pending())"
            )

    def settle(self, prompt_ids: Sequence[str], counts: Sequence[int]) -> None:
        old = self._deferrals
        kept = {
            p: old[p] + 1 for p, c in zip(prompt_ids, counts, strict=True) if c == 0 and p in old
        }
        new = {p: 1 for p, c in zip(prompt_ids, counts, strict=True) if c == 0 and p not in old}
        self._deferrals = {**kept, **new}

    def state_dict(self) -> dict[str, Any]:
        return {"ids": list(self._deferrals), "deferrals": list(self._deferrals.values())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ids, counts = list(state["ids"]), [int(x) for x in state["deferrals"]]
        if len(ids) != len(counts):
            raise ValueError("candidate pool state has lists of different lengths")
        self._deferrals = dict(zip(ids, counts, strict=True))
