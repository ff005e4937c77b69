"""Rollout budget: online per-prompt difficulty and how many rollouts each prompt gets.

A fixed group size wastes rollouts on prompts the policy always solves and starves the hard ones
(all-correct and all-wrong groups both have zero GRPO advantage). This module keeps the total
number of rollouts per step fixed and moves it between prompts:

* :class:`DifficultyTracker` -- per-prompt (decayed) rollout/success counts and difficulty ranks.
* :func:`rank_allocation` -- the paper's rank-proportional rule, with its defects fixed.
* :func:`value_allocation` -- exact maximisation of the expected number of mixed groups under a
  Beta posterior per prompt (the "beyond the paper" rule).
* Allocators (``uniform``, ``rank``, ``value``) that the trainer calls once per step.

Everything is numpy + stdlib and deterministic given its inputs (and the ``rng`` where one is used).
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _stable_hash(prompt_id: str) -> int:
    """64-bit hash of an id, identical across processes and runs (unlike the builtin ``hash``)."""
    return int.from_bytes(hashlib.blake2b(prompt_id.encode(), digest_size=8).digest(), "big")


class DifficultyTracker:
    """Online difficulty of every prompt, as (decayed) counts of rollouts and successes.

    Decay semantics: each :meth:`update` call (one training step) first multiplies *all* stored
    counts by ``decay`` and then adds that step's counts, so
    ``counts_t = decay * counts_{t-1} + step_counts_t``. ``decay=1`` keeps the full history (the
    paper's cumulative mean); smaller values let old evidence fade as the policy improves.

    Ranks: prompts sorted by mean accuracy (successes / rollouts), highest first, ``r = pos / N``
    with ``N`` = number of known prompts (``register`` the whole dataset so that ``N`` is its size),
    so ``r in [0, 1)`` and 0 is the easiest. Unseen prompts (no rollouts, or all history decayed to
    zero) are the hardest (``unseen="hardest"``, the paper) or sit at accuracy 0.5
    (``unseen="prior"``). Ties are broken by a stable hash of the id, not by dataset order, so tied
    prompts get a pseudo-random but reproducible order. ``rank_refresh="step"`` ranks on the live
    counts; ``"epoch"`` (the paper) ranks on a snapshot taken at :meth:`end_epoch`, so before the
    first epoch end every prompt is unseen.
    """

    def __init__(
        self,
        success_threshold: float = 1.0,
        decay: float = 1.0,
        rank_refresh: str = "step",
        unseen: str = "hardest",
    ) -> None:
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got decay={decay}")
        if rank_refresh not in ("step", "epoch"):
            raise ValueError(f"rank_refresh must be 'step' or 'epoch', got {rank_refresh!r}")
        if unseen not in ("hardest", "prior"):
            raise ValueError(f"unseen must be 'hardest' or 'prior', got {unseen!r}")
        self.success_threshold = float(success_threshold)
        self.decay = float(decay)
        self.rank_refresh = rank_refresh
        self.unseen = unseen
        self._reset()

    def _reset(self) -> None:
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._hash = np.zeros(0, dtype=np.uint64)
        self._rollouts = np.zeros(0)
        self._successes = np.zeros(0)
        self._frozen = np.zeros(0)  # accuracy snapshot at the last end_epoch; nan = unseen then
        self._rank_cache: np.ndarray | None = None
        self.steps = 0
        self.epochs = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def num_seen(self) -> int:
        """Number of prompts with a non-zero (decayed) rollout count."""
        return int(np.count_nonzero(self._rollouts > 0))

    def register(self, prompt_ids: Sequence[str]) -> None:
        """Make ids known (as unseen) so that they count in ``N``. Idempotent and cheap."""
        new = [p for p in dict.fromkeys(prompt_ids) if p not in self._index]
        if not new:
            return
        for k, pid in enumerate(new, start=len(self._ids)):
            self._index[pid] = k
        self._ids.extend(new)
        hashes = np.array([_stable_hash(p) for p in new], dtype=np.uint64)
        self._hash = np.concatenate([self._hash, hashes])
        self._rollouts = np.concatenate([self._rollouts, np.zeros(len(new))])
        self._successes = np.concatenate([self._successes, np.zeros(len(new))])
        self._frozen = np.concatenate([self._frozen, np.full(len(new), np.nan)])
        self._rank_cache = None  # N changed

    def update(self, prompt_ids: Sequence[str], rewards: Sequence[float]) -> None:
        """Record one step: one (id, reward) per rollout; ``reward >= success_threshold`` wins.

        Step counts are summed per prompt before being added, so counts stay exact integers when
        ``decay == 1``. A NaN reward counts as a failure.
        """
        if len(prompt_ids) != len(rewards):
            raise ValueError(f"got {len(prompt_ids)} prompt ids but {len(rewards)} rewards")
        self.register(prompt_ids)
        idx = np.array([self._index[p] for p in prompt_ids], dtype=np.int64)
        won = (np.asarray(rewards, dtype=float) >= self.success_threshold).astype(float)
        if self.decay != 1.0:
            self._rollouts *= self.decay
            self._successes *= self.decay
        self._rollouts += np.bincount(idx, minlength=len(self))
        self._successes += np.bincount(idx, weights=won, minlength=len(self))
        self.steps += 1
        if self.rank_refresh == "step":
            self._rank_cache = None

    def end_epoch(self) -> None:
        """Snapshot accuracies for ``rank_refresh="epoch"`` (kept in both modes, for resumes)."""
        self._frozen = self._accuracy()
        self.epochs += 1
        if self.rank_refresh == "epoch":
            self._rank_cache = None

    def _accuracy(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._rollouts > 0, self._successes / self._rollouts, np.nan)

    def _indices(self, prompt_ids: Sequence[str]) -> np.ndarray:
        missing = [p for p in prompt_ids if p not in self._index]
        if missing:
            raise KeyError(f"unknown prompt ids {missing[:5]}; call register() or update() first")
        return np.array([self._index[p] for p in prompt_ids], dtype=np.int64)

    def _rank_table(self) -> np.ndarray:
        if self._rank_cache is None:
            acc = self._accuracy() if self.rank_refresh == "step" else self._frozen
            key = np.where(np.isnan(acc), -np.inf if self.unseen == "hardest" else 0.5, acc)
            order = np.lexsort((self._hash, -key))  # accuracy descending, then hash
            table = np.empty(len(self))
            table[order] = np.arange(len(self)) / max(len(self), 1)
            self._rank_cache = table
        return self._rank_cache

    def ranks(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """Difficulty ranks in [0, 1) (0 = easiest) of known prompts; unknown ids raise KeyError."""
        return self._rank_table()[self._indices(prompt_ids)]

    def mean_accuracy(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """Live (decayed) successes / rollouts; NaN for unseen prompts."""
        return self._accuracy()[self._indices(prompt_ids)]

    def successes_failures(self, prompt_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Live decayed success and failure counts (failures >= 0 exactly: decay preserves s<=n)."""
        idx = self._indices(prompt_ids)
        s = self._successes[idx]
        return s, self._rollouts[idx] - s

    def state_dict(self) -> dict[str, Any]:
        """Counts as plain lists (JSON round-trips floats exactly); config stays the caller's."""
        return {
            "ids": list(self._ids),
            "rollouts": self._rollouts.tolist(),
            "successes": self._successes.tolist(),
            "frozen_accuracy": [None if math.isnan(x) else x for x in self._frozen.tolist()],
            "steps": self.steps,
            "epochs": self.epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ids = list(state["ids"])
        if not len(ids) == len(state["rollouts"]) == len(state["successes"]):
            raise ValueError("tracker state has lists of different lengths")
        self._reset()
        self.register(ids)
        self._rollouts = np.array(state["rollouts"], dtype=float).reshape(-1)
        self._successes = np.array(state["successes"], dtype=float).reshape(-1)
        frozen = [math.nan if x is None else x for x in state["frozen_accuracy"]]
        self._frozen = np.array(frozen, dtype=float).reshape(-1)
        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])


# --------------------------------------------------------------------------- allocation rules


def _check_bounds(num: int, budget: int, n_min: int, n_max: int) -> tuple[int, int, int]:
    """Validate a (batch, budget, bounds) setting; infeasible ones are config errors, not clamps."""
    budget, n_min, n_max = operator.index(budget), operator.index(n_min), operator.index(n_max)
    if num == 0:
        raise ValueError(f"cannot allocate budget={budget} over an empty batch")
    if n_min < 0 or n_min > n_max:
        raise ValueError(f"need 0 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    if not n_min * num <= budget <= n_max * num:
        raise ValueError(
            f"budget={budget} is infeasible for B={num} prompts with n_min={n_min}, "
            f"n_max={n_max}: need {n_min * num} <= budget <= {n_max * num}"
        )
    return budget, n_min, n_max


def _spread(counts: np.ndarray, left: int, order: np.ndarray, n_min: int, n_max: int) -> None:
    """Give ``left`` rollouts one at a time along ``order`` (cycling, capped at n_max) in place;
    a negative ``left`` takes them back from the end of ``order`` (floored at n_min)."""
    while left > 0:
        take = order[counts[order] < n_max][:left]
        counts[take] += 1
        left -= len(take)
    back = order[::-1]
    while left < 0:
        take = back[counts[back] > n_min][:-left]
        counts[take] -= 1
        left += len(take)


def rank_allocation(ranks: Sequence[float], budget: int, n_min: int, n_max: int) -> list[int]:
    """The paper's rule ``c_i = n_min + floor((budget - n_min*B) * r_i / sum_j r_j)``, leftover one
    by one to the highest ranks, fixed so that ``sum c == budget`` and ``n_min <= c <= n_max``.

    Where the authors' rule already respects ``n_max`` the result is identical to theirs. Otherwise
    shares above ``n_max`` are capped and the excess is re-shared among the others in proportion to
    rank (water-filling, repeated until nothing exceeds). ``sum r == 0`` gives uniform weights.
    Shares are monotone in rank and the leftover goes hardest first, so a strictly harder prompt
    never gets fewer rollouts; equal ranks are ordered by position (the tracker's ranks are
    distinct, with ties already broken by id hash).
    """
    r = np.asarray(ranks, dtype=float).reshape(-1)
    budget, n_min, n_max = _check_bounds(len(r), budget, n_min, n_max)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"ranks must be finite and >= 0, got min={r.min()}")
    counts = np.full(len(r), n_min, dtype=np.int64)
    free = np.ones(len(r), dtype=bool)
    while free.any():
        extra = budget - n_max * int(np.count_nonzero(~free)) - n_min * int(free.sum())
        w = np.where(free, r, 0.0)
        total = math.fsum(w)
        if total == 0.0:  # the reference divides by zero here
            w, total = free.astype(float), float(free.sum())
        share = n_min + np.floor(extra * w / total).astype(np.int64)
        over = free & (share > n_max)
        if not over.any():
            counts[free] = share[free]
            break
        counts[over] = n_max
        free &= ~over
    order = np.lexsort((np.arange(len(r)), -r))  # hardest first, ties by position
    _spread(counts, budget - int(counts.sum()), order, n_min, n_max)
    return counts.tolist()


def beta_power_moments(a: Any, b: Any, max_power: int) -> np.ndarray:
    """``E[p^c]`` for ``p ~ Beta(a, b)`` and ``c = 0..max_power``, shape ``(..., max_power + 1)``.

    Uses ``E[p^(c+1)] = E[p^c] * (a + c) / (a + b + c)``: a running product of factors in (0, 1)
    that cannot overflow (a ratio of Gamma functions would) and underflows gracefully to 0.
    """
    a = np.asarray(a, dtype=float)[..., None]
    b = np.asarray(b, dtype=float)[..., None]
    factors = (a + np.arange(max_power)) / (a + b + np.arange(max_power))
    ones = np.ones(factors.shape[:-1] + (1,))
    return np.concatenate([ones, np.cumprod(factors, axis=-1)], axis=-1)


def _posterior(successes: Any, failures: Any, prior: Sequence[float]) -> tuple[np.ndarray, ...]:
    s = np.asarray(successes, dtype=float).reshape(-1)
    f = np.asarray(failures, dtype=float).reshape(-1)
    a0, b0 = (float(x) for x in prior)
    if s.shape != f.shape:
        raise ValueError(f"got {len(s)} success counts but {len(f)} failure counts")
    if not (
        np.all(np.isfinite(s)) and np.all(np.isfinite(f)) and np.all(s >= 0) and np.all(f >= 0)
    ):
        raise ValueError("success and failure counts must be finite and >= 0")
    if not (a0 > 0 and b0 > 0):
        raise ValueError(f"Beta prior must be positive, got prior=({a0}, {b0})")
    return a0 + s, b0 + f


def _mixed_gains(a: np.ndarray, b: np.ndarray, c_max: int) -> np.ndarray:
    """``gains[:, c] = g(c+1) - g(c)`` for ``c < c_max``, ``g(c) = E[1 - p^c - (1-p)^c]``, g(0)=0.

    Written as ``E[p^c (1-p)] + E[(1-p)^c p]`` -- a sum of positive terms, so it is exact-ish
    (no cancellation) and non-increasing in c for c >= 1 (g is concave there); g(1) = g(0) = 0.
    """
    m1, m2 = beta_power_moments(a, b, c_max), beta_power_moments(b, a, c_max)
    s = (a + b)[:, None] + np.arange(c_max)
    gains = m1[:, :-1] * (b[:, None] / s) + m2[:, :-1] * (a[:, None] / s)
    gains[:, :1] = 0.0
    return gains


def _knapsack_gains(a: np.ndarray, b: np.ndarray, c_max: int) -> np.ndarray:
    """Marginal gains of ``v(c) = E[(1 - p^c - (1-p)^c) p (1-p)^2]`` (Knapsack-RL's task value:
    the chance of a non-zero gradient times their InfoGain ``p (1-p)^2``, here averaged over the
    Beta posterior instead of at a point estimate).

    ``p (1-p)^2`` times the Beta(a, b) density is ``K`` times the Beta(a+1, b+2) density with
    ``K = E[p (1-p)^2] = a b (b+1) / ((a+b)(a+b+1)(a+b+2))``, so the gains are K times the mixed
    gains of that shifted posterior: the same shape (concave from c = 1), so the same solvers."""
    k = a * b * (b + 1) / ((a + b) * (a + b + 1) * (a + b + 2))
    return k[:, None] * _mixed_gains(a + 1, b + 2, c_max)


OBJECTIVES = {"mixed": _mixed_gains, "knapsack": _knapsack_gains}
"""Per-prompt value of a group of c rollouts, as marginal gains (see `value_allocation`)."""


def _solve_greedy(
    gains: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int, priority: np.ndarray
) -> np.ndarray:
    """Exact when every lo >= 1 (concave part): take the ``budget - sum(lo)`` largest marginal
    gains; ties prefer the higher-priority prompt, then the smaller count (keeps rows prefixes)."""
    cols = np.arange(gains.shape[1])
    rows, cs = np.nonzero((cols >= lo[:, None]) & (cols < hi[:, None]))
    pick = np.lexsort((cs, priority[rows], -gains[rows, cs]))[: budget - int(lo.sum())]
    return lo + np.bincount(rows[pick], minlength=len(lo))


def _solve_dp(
    gains: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int, order: np.ndarray
) -> np.ndarray:
    """Exact max of ``sum g_i(c_i)`` s.t. ``sum c = budget``, ``lo <= c <= hi`` by dynamic
    programming over prompts (needed when some lo = 0: g is not concave at 0). Prompts are added in
    ``order`` and each keeps the smallest optimal count, so ties favour the prompts added first."""
    n1 = gains.shape[1] + 1
    g = np.concatenate([np.zeros((len(lo), 1)), np.cumsum(gains, axis=1)], axis=1)
    cs = np.arange(n1)
    best = np.full(budget + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((len(lo), budget + 1), dtype=np.min_scalar_type(n1))
    for k, i in enumerate(order):
        gi = np.where((cs >= lo[i]) & (cs <= hi[i]), g[i], -np.inf)
        padded = np.concatenate([np.full(n1 - 1, -np.inf), best])
        cand = sliding_window_view(padded, n1)[:, ::-1] + gi  # cand[t, c] = best[t - c] + g_i(c)
        choice[k] = np.argmax(cand, axis=1)
        best = np.take_along_axis(cand, choice[k][:, None].astype(np.int64), axis=1)[:, 0]
    counts, t = np.zeros(len(lo), dtype=np.int64), budget
    for k in range(len(order) - 1, -1, -1):
        counts[order[k]] = choice[k, t]
        t -= int(choice[k, t])
    return counts


def _solve(
    gains: np.ndarray, lo: np.ndarray, hi: np.ndarray, budget: int, order: np.ndarray
) -> np.ndarray:
    """Exact optimum; the fast greedy where it is exact (every lower bound >= 1)."""
    if lo.min() >= 1:
        priority = np.empty(len(order), dtype=np.int64)
        priority[order] = np.arange(len(order))
        return _solve_greedy(gains, lo, hi, budget, priority)
    return _solve_dp(gains, lo, hi, budget, order)


def value_allocation(
    successes: Any,
    failures: Any,
    budget: int,
    n_min: int,
    n_max: int,
    prior: Sequence[float] = (1.0, 1.0),
    recheck_prob: float = 0.0,
    rng: np.random.Generator | None = None,
    objective: str = "mixed",
) -> list[int]:
    """Counts maximising the expected value of the step's groups.

    Per prompt ``p ~ Beta(a0 + s, b0 + f)``. ``objective="mixed"``: the expected number of mixed
    groups (the only ones with GRPO signal), ``g(c) = 1 - E[p^c] - E[(1-p)^c]`` (g(0) = g(1) = 0).
    It counts a 1-in-12 group on a near-solved prompt as much as a 6-in-12 one, and because
    ``g`` saturates fastest where ``p`` is most uncertain, it can give *more* rollouts to prompts
    that have been all-correct than to mixed ones. ``objective="knapsack"`` weights each group
    by Knapsack-RL's InfoGain ``p (1-p)^2`` (``_knapsack_gains``), which stops that and leans
    towards the harder prompts. Maximises ``sum v_i(c_i)`` exactly subject to ``sum c = budget``
    and ``n_min <= c <= n_max``: greedy by marginal gain when ``n_min >= 1`` (v is concave from 1),
    dynamic programming when ``n_min == 0``. Ties prefer the harder prompt (lower posterior mean),
    then the less-known one (smaller a + b), then position.

    Re-check (``n_min == 0`` only): a skipped prompt's estimate never changes, so each prompt
    allocated 0 is, with probability ``recheck_prob``, forced to get at least 2 rollouts -- 2 is
    the smallest group that can be mixed (a single rollout always has zero GRPO advantage), so the
    re-check both refreshes the estimate and can teach. The problem is then re-solved exactly with
    those lower bounds; if not all fit in the budget, the hardest are kept. One uniform draw per
    prompt is taken from ``rng`` whenever ``recheck_prob > 0``, so the stream is reproducible.
    """
    a, b = _posterior(successes, failures, prior)
    budget, n_min, n_max = _check_bounds(len(a), budget, n_min, n_max)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if not 0.0 <= recheck_prob <= 1.0:
        raise ValueError(f"recheck_prob must be in [0, 1], got recheck_prob={recheck_prob}")
    if recheck_prob > 0 and rng is None:
        raise ValueError("recheck_prob > 0 needs an rng (np.random.Generator)")
    order = np.lexsort((np.arange(len(a)), a + b, a / (a + b)))  # preferred first
    lo, hi = np.full(len(a), n_min, dtype=np.int64), np.full(len(a), n_max, dtype=np.int64)
    gains = OBJECTIVES[objective](a, b, n_max)
    counts = _solve(gains, lo, hi, budget, order)
    if recheck_prob > 0:
        draw = rng.random(len(a)) < recheck_prob
        forced = [i for i in order if counts[i] == 0 and draw[i]]
        fits = (budget - int(lo.sum())) // 2 if n_max >= 2 else 0  # here n_min == 0
        if forced and fits > 0:
            lo[forced[:fits]] = 2
            counts = _solve(gains, lo, hi, budget, order)
    return counts.tolist()


def expected_mixed(
    successes: Any,
    failures: Any,
    counts: Sequence[int],
    prior: Sequence[float] = (1.0, 1.0),
    objective: str = "mixed",
) -> float:
    """The objective :func:`value_allocation` maximises, ``sum v_i(c_i)``: by default the expected
    number of mixed groups."""
    a, b = _posterior(successes, failures, prior)
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    if c.shape != a.shape or np.any(c < 0):
        raise ValueError(f"need {len(a)} non-negative counts, got {c.tolist()}")
    gains = OBJECTIVES[objective](a, b, int(c.max(initial=0)))
    g = np.concatenate([np.zeros((len(a), 1)), np.cumsum(gains, axis=1)], axis=1)
    return float(g[np.arange(len(a)), c].sum())


# --------------------------------------------------------------------------- schedules, allocators


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
    """Per-step rollout counts for a batch; ``sum(counts) == budget``.

    Allocators hold only their config: the schedule is a pure function of ``epoch``/``step`` and
    the difficulty lives in the tracker, so only the tracker needs checkpointing.
    """

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

    def allocate(self, prompt_ids, budget, tracker, epoch, step, rng) -> list[int]:
        _check_bounds(len(prompt_ids), budget, self.n, self.n)
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
        return rank_allocation(tracker.ranks(prompt_ids), budget, n_min, n_max)


@dataclass(frozen=True)
class ValueAllocator:
    """:func:`value_allocation` on the tracker's live (decayed) counts, whatever its rank mode."""

    n_min: int = 0
    n_max: int = 16
    prior: tuple[float, float] = (1.0, 1.0)
    recheck_prob: float = 0.05
    objective: str = "mixed"

    def allocate(self, prompt_ids, budget, tracker, epoch, step, rng) -> list[int]:
        tracker.register(prompt_ids)
        s, f = tracker.successes_failures(prompt_ids)
        return value_allocation(
            s,
            f,
            budget,
            self.n_min,
            self.n_max,
            tuple(self.prior),
            self.recheck_prob,
            rng,
            self.objective,
        )


ALLOCATORS: dict[str, type] = {
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
    if b.allocator == "uniform":
        return make_allocator("uniform", n=n)
    if b.allocator == "rank":
        return make_allocator(
            "rank",
            n=n,
            n_low=b.n_low,
            n_high=b.n_high,
            n_update=b.n_update,
            steps_per_widening=b.widen_every or None,
        )
    return make_allocator(
        "value",
        n_min=b.n_min,
        n_max=b.n_max,
        prior=tuple(b.prior),
        recheck_prob=b.recheck_prob,
        objective=b.value_objective,
    )


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
