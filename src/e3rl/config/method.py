"""The method's sections (rollout budget, temperature control, length bias) and the checks of
the method's settings that span sections, shared by `Config.validate` and the verl and TRL
adapters' `e3rl` sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from e3rl.config.base import ConfigError, _require


@dataclass
class LengthBiasConfig:
    mu: float = 0.0
    """Correct answers of the easiest prompts earn 1/(1 + mu*length); 0 = off (paper: 1e-3)."""
    threshold: float = 0.1
    """Fraction of prompts, easiest first by the tracker's rank, that the length bias applies to."""

    def __post_init__(self) -> None:
        _require(self.mu >= 0, "mu", self.mu, "a float >= 0")
        _require(0 <= self.threshold <= 1, "threshold", self.threshold, "a float in [0, 1]")


@dataclass
class BudgetConfig:
    allocator: Literal["uniform", "rank", "value"] = "uniform"
    """How the step's rollout budget is split over its prompts."""
    success_threshold: float = 1.0
    """A rollout whose reward is >= this counts as a success for difficulty tracking."""
    rank_refresh: Literal["step", "epoch"] = "step"
    """Recompute difficulty ranks every step, or only at epoch end (the paper)."""
    decay: float = 1.0
    """Multiply all past counts by this each step so old history fades (1 = keep all)."""
    n_low: int = 4
    """rank: lowest count the widening schedule reaches."""
    n_high: int = 12
    """rank: highest count the widening schedule reaches."""
    n_update: int = 2
    """rank: how much the bounds widen per epoch (or per budget.widen_every steps)."""
    widen_every: int = 0
    """rank: widen the bounds every this many steps instead of every epoch (0 = per epoch)."""
    rank_leftover: Literal["greedy", "spread"] = "greedy"
    """rank: rounding leftover to the hardest prompt up to n_max first (the authors'), or one at a time (e3rl's change)."""
    n_min: int = 2
    """value: fewest rollouts a prompt gets (0 allows skipping a prompt)."""
    n_max: int = 16
    """value: most rollouts a prompt gets."""
    prior: list[float] = field(default_factory=lambda: [1.0, 1.0])
    """value: Beta prior (alpha, beta) over each prompt's success probability."""
    prior_fit: bool = False
    """value: fit the Beta prior to the tracked prompts' pass rates each step (empirical Bayes); budget.prior until 16 prompts have 2+ rollouts."""
    forecast: Literal["posterior", "transition"] = "posterior"
    """value: plan on each prompt's Beta posterior, or on the transition forecast of its pass rate at this visit (learned from earlier prompts' moves between visits)."""
    forecast_keep: float = 0.5
    """forecast=transition: bin a prompt by its history with each older visit weighted this much (0 = its last visit only)."""
    recheck_prob: float = 0.05
    """value, skip_below: chance that a prompt allocated 0 (or skipped) still gets a group so its estimate stays fresh."""
    value_objective: Literal["mixed", "knapsack", "mixed_rollouts"] = "mixed"
    """value: what a group is worth: P(mixed), P(mixed) x p(1-p)^2 (Knapsack-RL's weight), or c x P(mixed) (rollouts with a signal)."""
    max_deferrals: int = 2
    """data.candidates_per_step > batch_size: a candidate that got 0 rollouts this many times in a row is rolled at its next offer."""
    skip_below: float = 0.0
    """Give 0 rollouts to a prompt whose forecast chance of a mixed group is below this (re-checked with recheck_prob); the step then spends less than its budget (0 = spend it all)."""

    def __post_init__(self) -> None:
        _require(0 < self.decay <= 1, "decay", self.decay, "a float in (0, 1]")
        for name in ("n_low", "n_high", "n_update", "widen_every", "n_min", "n_max"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "an integer >= 0")
        _require(self.n_low >= 1, "n_low", self.n_low, "an integer >= 1")
        _require(self.max_deferrals >= 1, "max_deferrals", self.max_deferrals, "an integer >= 1")
        _require(self.n_low <= self.n_high, "n_low", self.n_low, f"<= n_high={self.n_high}")
        _require(self.n_min <= self.n_max, "n_min", self.n_min, f"<= n_max={self.n_max}")
        _require(self.n_max >= 1, "n_max", self.n_max, "an integer >= 1")
        _require(
            len(self.prior) == 2 and all(p > 0 for p in self.prior),
            "prior",
            self.prior,
            "two floats > 0 (alpha, beta)",
        )
        _require(0 <= self.recheck_prob <= 1, "recheck_prob", self.recheck_prob, "in [0, 1]")
        _require(0 <= self.forecast_keep < 1, "forecast_keep", self.forecast_keep, "in [0, 1)")
        _require(0 <= self.skip_below < 1, "skip_below", self.skip_below, "in [0, 1)")


@dataclass
class TemperatureConfig:
    warmup_steps: int = 1
    """Steps at the initial temperature whose mean entropy becomes the target."""
    target_entropy: float | None = None
    """Fixed entropy target (nats per token) instead of the warm-up mean."""
    min_temperature: float = 0.1
    """Lower clamp of the controlled temperature."""
    max_temperature: float = 3.0
    """Upper clamp of the controlled temperature."""
    anneal: bool = False
    """Lower the target with a cosine over the last anneal_ratio of training."""
    anneal_ratio: float = 0.4
    """Fraction of trainer.total_steps, at the end, over which the target is annealed."""
    anneal_factor: float = 0.9
    """The annealed target ends at this fraction of the initial target."""

    def __post_init__(self) -> None:
        _require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")
        _require(
            self.target_entropy is None or self.target_entropy > 0,
            "target_entropy",
            self.target_entropy,
            "null or a float > 0",
        )
        _require(self.min_temperature > 0, "min_temperature", self.min_temperature, "> 0")
        _require(
            self.max_temperature >= self.min_temperature,
            "max_temperature",
            self.max_temperature,
            f">= min_temperature={self.min_temperature}",
        )
        _require(0 <= self.anneal_ratio <= 1, "anneal_ratio", self.anneal_ratio, "in [0, 1]")
        _require(0 < self.anneal_factor <= 1, "anneal_factor", self.anneal_factor, "in (0, 1]")


def check_method(
    budget: BudgetConfig,
    n: int,
    temperature_control: str,
    temperature: TemperatureConfig,
    n_key: str,
    prefix: str,
    control_key: str,
    fixed_batch: str | None = None,
) -> None:
    """The method's settings that span sections, checked once for every trainer: ``n`` rollouts
    per prompt on average must fit the allocator's bounds, annealing needs the controller, and a
    trainer that sizes every batch in advance (``fixed_batch``: its name) cannot skip rollouts.
    Messages name the keys as the caller's config spells them (``prefix``, ``n_key``, ...)."""
    b = budget
    if fixed_batch and b.skip_below > 0:
        raise ConfigError(
            f"{prefix}budget.skip_below={b.skip_below} is invalid with {fixed_batch}: it sizes "
            "every batch to the full budget, so expected 0 (skipping rollouts needs e3rl's own "
            "trainer)"
        )
    if b.allocator == "value":
        _require(
            b.n_min <= n <= b.n_max,
            n_key,
            n,
            f"within [{prefix}budget.n_min, {prefix}budget.n_max] = [{b.n_min}, {b.n_max}] so "
            f"that the step budget n * prompts is feasible",
        )
    if b.allocator == "rank":
        _require(
            b.n_low <= n <= b.n_high,
            n_key,
            n,
            f"within [{prefix}budget.n_low, {prefix}budget.n_high] = [{b.n_low}, {b.n_high}] "
            "for the rank allocator",
        )
    if temperature.anneal and temperature_control != "entropy":
        raise ConfigError(
            f"{prefix}temperature.anneal=true needs {control_key}=entropy "
            "(annealing moves the entropy target of the controller)"
        )


def check_selection(
    allocator: str,
    candidates: int,
    batch_size: int,
    n: int,
    n_min: int,
    keys: tuple[str, str, str, str] = (
        "data.candidates_per_step",
        "data.batch_size",
        "rollout.n",
        "budget.",
    ),
) -> None:
    """Settings under which the deferral bound is guaranteed; a ConfigError naming the keys
    otherwise. ``keys``: how the caller's config spells candidates, batch size, n and the budget
    section (verl: ``e3rl.candidates_per_step``, ``data.train_batch_size``, ...)."""
    c_key, b_key, n_key, budget = keys
    if candidates <= batch_size:
        return
    if allocator not in ("uniform", "rank", "value"):
        raise ConfigError(
            f"{c_key}={candidates} needs {budget}allocator in ['uniform', 'rank', 'value'], "
            f"got {allocator!r}"
        )
    if allocator in ("uniform", "rank") and candidates > 2 * batch_size:
        raise ConfigError(
            f"{c_key}={candidates} is invalid with {budget}allocator={allocator}: expected at "
            f"most 2 x {b_key} = {2 * batch_size} (it rolls {b_key} prompts a step, so no more "
            "than that many may be waiting)"
        )
    lo = max(n_min, 2)
    if allocator == "value" and candidates * lo > n * batch_size:
        raise ConfigError(
            f"{c_key}={candidates} is invalid with {budget}allocator=value: expected "
            f"candidates x max({budget}n_min, 2) <= {n_key} x {b_key} = {n * batch_size}, i.e. "
            f"at most {n * batch_size // lo} candidates (so that every candidate at its deferral "
            "bound can be rolled)"
        )
