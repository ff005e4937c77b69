"""Allocation rules: how many rollouts each prompt of a batch gets, given its difficulty.

* :func:`rank_allocation` -- the paper's rank-proportional rule (the authors' counts wherever they
  respect ``n_max``), with its defects fixed.
* :func:`value_allocation` -- exact maximisation of the expected number of mixed groups under a
  Beta posterior per prompt (the "beyond the paper" rule).

Pure numpy + stdlib functions of their inputs (and of the ``rng`` where one is used).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "OBJECTIVES",
    "RANK_LEFTOVER",
    "beta_power_moments",
    "check_bounds",
    "expected_mixed",
    "fit_beta_prior",
    "group_values",
    "p_mixed",
    "rank_allocation",
    "skip_unlikely",
    "value_allocation",
]


def check_bounds(num: int, budget: int, n_min: int, n_max: int) -> tuple[int, int, int]:
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


RANK_LEFTOVER = ("greedy", "spread")
"""How :func:`rank_allocation` hands out the rounding leftover: ``"greedy"`` (the authors') or
``"spread"`` (e3rl's own variant, one at a time)."""

_AUTHORS_EPS = 1e-8  # the authors normalise ranks by sum + 1e-8: kept, it changes the floors


def _spread(counts: np.ndarray, left: int, order: np.ndarray, n_min: int, n_max: int) -> None:
    """Give ``left`` rollouts one at a time along ``order`` (cycling, capped at n_max) in place;
    a negative ``left`` takes them back from the end of ``order`` (floored at n_min)."""
    while left > 0:
        take = order[counts[order] < n_max][:left]
        counts[take] += 1
        left -= len(take)
    _take_back(counts, left, order, n_min)


def _greedy(counts: np.ndarray, left: int, order: np.ndarray, n_min: int, n_max: int) -> None:
    """The authors' leftover: each prompt along ``order`` takes as many as ``n_max`` allows
    before the next one gets any (``add_count = min(diff, n_max - count)``), in place."""
    for i in order:
        if left <= 0:
            break
        add = min(left, n_max - int(counts[i]))
        if add > 0:
            counts[i] += add
            left -= add
    _take_back(counts, left, order, n_min)


def _take_back(counts: np.ndarray, left: int, order: np.ndarray, n_min: int) -> None:
    """Rounding can overshoot by a little: take rollouts back from the easiest, one at a time."""
    back = order[::-1]
    while left < 0:
        take = back[counts[back] > n_min][:-left]
        counts[take] -= 1
        left += len(take)


def _shares(r: np.ndarray, free: np.ndarray, extra: int, n_min: int, leftover: str) -> np.ndarray:
    """Rank-proportional counts of the ``free`` prompts sharing ``extra`` rollouts above n_min.

    ``"greedy"`` repeats the authors' float arithmetic operation for operation (``r / (sum +
    1e-8)``, then ``floor(n_min + extra * r)``, all prompts at zero weight when ``sum == 0``) so
    that the floors, and with them the counts, are theirs exactly. ``"spread"`` is e3rl's earlier
    arithmetic (exact sum, no epsilon, uniform weights when ``sum == 0``).
    """
    w = np.where(free, r, 0.0)
    if leftover == "greedy":
        total = w.sum()
        if total > 0:
            w = w / (total + _AUTHORS_EPS)
        return np.floor(float(n_min) + float(extra) * w).astype(np.int64)
    total = math.fsum(w)
    if total == 0.0:
        w, total = free.astype(float), float(free.sum())
    return n_min + np.floor(extra * w / total).astype(np.int64)


def rank_allocation(
    ranks: Sequence[float], budget: int, n_min: int, n_max: int, leftover: str = "greedy"
) -> list[int]:
    """The paper's rule ``c_i = n_min + floor((budget - n_min*B) * r_i / sum_j r_j)``, with the
    rounding leftover to the highest ranks, fixed so that ``sum c == budget`` and
    ``n_min <= c <= n_max``.

    ``leftover="greedy"`` (default) is the authors' code (``get_rollout_n_per_prompt`` in
    LiaoMengqi/E3-RL4LLMs, e3/trainer/ray_trainer.py): the hardest prompt takes as much of the
    leftover as ``n_max`` allows before the next gets any, and the shares are normalised by
    ``sum r + 1e-8`` as there. Wherever the authors' counts respect ``n_max`` the result is theirs
    exactly (tests/helpers/e3_reference.py). ``leftover="spread"`` is e3rl's own change: the
    leftover goes one rollout at a time, cycling over the prompts hardest first, so it spreads
    (50 prompts, ``n_min=1``, budget 63: the authors give one prompt 12, spread gives 2s).

    Where the authors' shares exceed ``n_max`` (their code then breaks the bound) shares above
    ``n_max`` are capped and the excess is re-shared among the others in proportion to rank
    (water-filling, repeated until nothing exceeds). Shares are monotone in rank and the leftover
    goes hardest first, so a strictly harder prompt never gets fewer rollouts; equal ranks are
    ordered by position (the tracker's ranks are distinct, with ties already broken by id hash).
    With ``sum r == 0`` the greedy rule, like the authors', gives the whole leftover to the first
    prompts in turn; spread gives uniform weights.
    """
    if leftover not in RANK_LEFTOVER:
        raise ValueError(f"unknown leftover={leftover!r}; valid: {', '.join(RANK_LEFTOVER)}")
    r = np.asarray(ranks, dtype=float).reshape(-1)
    budget, n_min, n_max = check_bounds(len(r), budget, n_min, n_max)
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"ranks must be finite and >= 0, got min={r.min()}")
    counts = np.full(len(r), n_min, dtype=np.int64)
    free = np.ones(len(r), dtype=bool)
    while free.any():
        extra = budget - n_max * int(np.count_nonzero(~free)) - n_min * int(free.sum())
        share = _shares(r, free, extra, n_min, leftover)
        over = free & (share > n_max)
        if not over.any():
            counts[free] = share[free]
            break
        counts[over] = n_max
        free &= ~over
    order = np.lexsort((np.arange(len(r)), -r))  # hardest first, ties by position
    give = _greedy if leftover == "greedy" else _spread
    give(counts, budget - int(counts.sum()), order, n_min, n_max)
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


FIT_MIN_PROMPTS = 16
"""`fit_beta_prior` keeps the fallback prior until this many prompts have 2+ rollouts."""


def fit_beta_prior(
    successes: Any, failures: Any, fallback: Sequence[float] = (1.0, 1.0)
) -> tuple[float, float]:
    """The Beta(a, b) whose mean and variance match the population of prompts' pass rates
    (empirical Bayes by the method of moments), from each prompt's success and failure counts.

    A prompt's observed rate s/n scatters around its true rate by binomial noise, so
    ``E[(s/n - m)^2] = var (1 - 1/n) + m (1 - m) / n`` with m the pooled mean; solving for the
    variance of the true rates over the prompts with n >= 2 gives ``var``, then
    ``a + b = m (1 - m) / var - 1``. Why: with a uniform Beta(1, 1), a prompt seen once at 8 of 8
    still looks half likely to give a mixed group next time; on a population of mostly solved and
    mostly failed prompts (U-shaped, the usual case in RL post-training) the fitted prior says
    how rare that is (benchmarks/allocation_ceiling.py). ``fallback`` until
    ``FIT_MIN_PROMPTS`` prompts have 2 or more rollouts; the variance is kept inside
    (1e-4, m (1 - m)) so a and b stay positive and finite.
    """
    s = np.asarray(successes, dtype=float).reshape(-1)
    n = s + np.asarray(failures, dtype=float).reshape(-1)
    seen = n >= 2
    if seen.sum() < FIT_MIN_PROMPTS:
        return float(fallback[0]), float(fallback[1])
    s, n = s[seen], n[seen]
    m = float(s.sum() / n.sum())
    if not 0.0 < m < 1.0:  # every rollout right (or wrong): no spread to fit
        return float(fallback[0]), float(fallback[1])
    h = float(np.mean(1.0 / n))
    var = (float(np.mean((s / n - m) ** 2)) - m * (1 - m) * h) / (1 - h)
    var = min(max(var, 1e-4), m * (1 - m) * 0.999)
    strength = m * (1 - m) / var - 1
    return m * strength, (1 - m) * strength


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


def _mixed_rollout_gains(a: np.ndarray, b: np.ndarray, c_max: int) -> np.ndarray:
    """Marginal gains of ``v(c) = c * P(mixed | c)``: the expected number of rollouts that land in
    a mixed group, i.e. the share of the budget with a GRPO signal. Unlike the others it is not
    concave (it grows about linearly once a group is likely mixed), so it is solved exactly by
    dynamic programming, and it favours few large groups on uncertain prompts over many small
    ones."""
    g = np.concatenate([np.zeros((len(a), 1)), np.cumsum(_mixed_gains(a, b, c_max), axis=1)], 1)
    v = g * np.arange(c_max + 1)
    return np.diff(v, axis=1)


OBJECTIVES = {
    "mixed": _mixed_gains,
    "knapsack": _knapsack_gains,
    "mixed_rollouts": _mixed_rollout_gains,
}
"""Per-prompt value of a group of c rollouts, as marginal gains (see `value_allocation`)."""

_CONCAVE = frozenset({"mixed", "knapsack"})
"""Objectives whose gains are non-increasing from c = 1, where the greedy solver is exact."""


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
    cs = np.arange(gains.shape[1] + 1)
    allowed = (cs >= lo[:, None]) & (cs <= hi[:, None])
    return solve_dp_allowed(gains, allowed, budget, order)


def solve_dp_allowed(
    gains: np.ndarray, allowed: np.ndarray, budget: int, order: np.ndarray
) -> np.ndarray:
    """:func:`_solve_dp` over any set of allowed counts per prompt: ``allowed[i, c]`` says
    whether prompt ``i`` may get ``c`` rollouts (``c = 0..gains.shape[1]``), e.g. "0 or at least
    2". The caller makes sure some choice spends ``budget`` exactly."""
    n1 = gains.shape[1] + 1
    g = np.concatenate([np.zeros((len(allowed), 1)), np.cumsum(gains, axis=1)], axis=1)
    best = np.full(budget + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((len(allowed), budget + 1), dtype=np.min_scalar_type(n1))
    for k, i in enumerate(order):
        gi = np.where(allowed[i], g[i], -np.inf)
        padded = np.concatenate([np.full(n1 - 1, -np.inf), best])
        cand = sliding_window_view(padded, n1)[:, ::-1] + gi  # cand[t, c] = best[t - c] + g_i(c)
        choice[k] = np.argmax(cand, axis=1)
        best = np.take_along_axis(cand, choice[k][:, None].astype(np.int64), axis=1)[:, 0]
    counts, t = np.zeros(len(allowed), dtype=np.int64), budget
    for k in range(len(order) - 1, -1, -1):
        counts[order[k]] = choice[k, t]
        t -= int(choice[k, t])
    return counts


def _solve(
    gains: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    budget: int,
    order: np.ndarray,
    concave: bool = True,
) -> np.ndarray:
    """Exact optimum; the fast greedy where it is exact (concave gains, every lower bound >= 1)."""
    if concave and lo.min() >= 1:
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
    towards the harder prompts. ``objective="mixed_rollouts"``: the expected number of rollouts
    in mixed groups, ``c * P(mixed)`` (the share of the budget with a signal). Maximises
    ``sum v_i(c_i)`` exactly subject to ``sum c = budget`` and ``n_min <= c <= n_max``: greedy by
    marginal gain when ``n_min >= 1`` and v is concave from 1 (mixed, knapsack), dynamic
    programming otherwise. Ties prefer the harder prompt (lower posterior mean), then the
    less-known one (smaller a + b), then position.

    Re-check (``n_min == 0`` only): a skipped prompt's estimate never changes, so each prompt
    allocated 0 is, with probability ``recheck_prob``, forced to get at least 2 rollouts -- 2 is
    the smallest group that can be mixed (a single rollout always has zero GRPO advantage), so the
    re-check both refreshes the estimate and can teach. The problem is then re-solved exactly with
    those lower bounds; if not all fit in the budget, the hardest are kept. One uniform draw per
    prompt is taken from ``rng`` whenever ``recheck_prob > 0``, so the stream is reproducible.
    """
    a, b = _posterior(successes, failures, prior)
    return value_allocation_beta(a, b, budget, n_min, n_max, recheck_prob, rng, objective)


def value_allocation_beta(
    a: Any,
    b: Any,
    budget: int,
    n_min: int,
    n_max: int,
    recheck_prob: float = 0.0,
    rng: np.random.Generator | None = None,
    objective: str = "mixed",
) -> list[int]:
    """:func:`value_allocation` with each prompt's belief given directly as ``p ~ Beta(a, b)``
    (e.g. a :class:`~e3rl.control.forecast.TransitionForecast`) instead of prior + counts."""
    a, b = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if a.shape != b.shape or not (np.all(a > 0) and np.all(b > 0) and np.all(np.isfinite(a + b))):
        raise ValueError("Beta parameters a and b must be finite, > 0 and of one length")
    budget, n_min, n_max = check_bounds(len(a), budget, n_min, n_max)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if not 0.0 <= recheck_prob <= 1.0:
        raise ValueError(f"recheck_prob must be in [0, 1], got recheck_prob={recheck_prob}")
    if recheck_prob > 0 and rng is None:
        raise ValueError("recheck_prob > 0 needs an rng (np.random.Generator)")
    order = np.lexsort((np.arange(len(a)), a + b, a / (a + b)))  # preferred first
    lo, hi = np.full(len(a), n_min, dtype=np.int64), np.full(len(a), n_max, dtype=np.int64)
    gains = OBJECTIVES[objective](a, b, n_max)
    concave = objective in _CONCAVE
    counts = _solve(gains, lo, hi, budget, order, concave)
    if recheck_prob > 0:
        draw = rng.random(len(a)) < recheck_prob
        forced = [i for i in order if counts[i] == 0 and draw[i]]
        fits = (budget - int(lo.sum())) // 2 if n_max >= 2 else 0  # here n_min == 0
        if forced and fits > 0:
            lo[forced[:fits]] = 2
            counts = _solve(gains, lo, hi, budget, order, concave)
    return counts.tolist()


def group_values(a: Any, b: Any, c_max: int, objective: str = "mixed") -> np.ndarray:
    """``v[i, c]``: the value of a group of ``c = 0..c_max`` rollouts of prompt ``i`` whose pass
    rate is ``Beta(a_i, b_i)`` (``objective="mixed"``: ``P(mixed)``), as :func:`value_allocation`
    sees it: the running sum of the objective's marginal gains."""
    a, b = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    gains = OBJECTIVES[objective](a, b, int(c_max))
    return np.concatenate([np.zeros((len(a), 1)), np.cumsum(gains, axis=1)], axis=1)


def p_mixed(a: Any, b: Any, n: Any) -> np.ndarray:
    """``P(a group of n_i is mixed)`` for ``p ~ Beta(a_i, b_i)``, per prompt (0 for n < 2)."""
    n = np.asarray(n, dtype=np.int64).reshape(-1)
    v = group_values(a, b, int(n.max(initial=0)))
    return np.clip(v[np.arange(len(n)), n], 0.0, 1.0)


def skip_unlikely(counts: Sequence[int], pm: Any, below: float, recheck: Any) -> list[int]:
    """``counts`` with 0 for each prompt whose chance of a mixed group ``pm[i]`` is below
    ``below``, unless ``recheck[i]`` (a prompt's estimate goes stale if it is never rolled). A
    step keeps at least its most promising prompt, so that it always has something to learn from.
    Such a step spends less than its budget: the point, where the forecast says a group would
    carry no GRPO signal (every rollout right, or every one wrong)."""
    pm, recheck = np.asarray(pm, dtype=float), np.asarray(recheck, dtype=bool)
    out = [int(c) if p >= below or r else 0 for c, p, r in zip(counts, pm, recheck, strict=True)]
    if not any(out) and any(counts):
        best = int(np.argmax(np.where(np.asarray(counts) > 0, pm, -1.0)))
        out[best] = int(counts[best])
    return out


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
    g = group_values(a, b, int(c.max(initial=0)), objective)
    return float(g[np.arange(len(a)), c].sum())
