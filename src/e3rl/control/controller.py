"""The method as one object that every trainer drives: :class:`E3Control`.

Per step a trainer calls, in this order:

1. :meth:`E3Control.set_epoch` when its data loader starts a new epoch (the rank schedule and
   ``rank_refresh="epoch"`` follow epochs);
2. :meth:`E3Control.plan` -- rollouts per prompt (0 = skipped) and the sampling temperature;
   or, when a step is offered more candidates than it rolls, :meth:`E3Control.select` -- the
   same, with the candidates that get 0 kept pending (:meth:`E3Control.pending`: they must
   lead the next step's candidates) and every candidate rolled within ``max_deferrals``
   deferrals (:mod:`e3rl.control.selection`);
3. :meth:`E3Control.observe` -- the step's raw rewards, response lengths and token-weighted
   entropy: updates the difficulty tracker and the temperature controller, returns the shaped
   (length-biased) rewards that feed the advantages and the step's metrics. Trainers that measure
   the entropy at another point than the rewards call :meth:`observe_rewards` and
   :meth:`observe_entropy` instead (in that order, once each).

The temperature a step samples with (``plan(...).temperature``) is also the one its loss must use
for the log-probabilities. Everything is numpy + stdlib: no torch, no framework.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from e3rl.config import BudgetConfig, LengthBiasConfig, TemperatureConfig
from e3rl.control.allocation import p_mixed, skip_unlikely
from e3rl.control.allocators import (
    Allocator,
    allocation_stats,
    allocator_from_config,
    current_prior,
)
from e3rl.control.length_bias import length_biased_rewards
from e3rl.control.selection import CandidatePool, choose_counts, forced_room, mixed_shares
from e3rl.control.temperature import EntropyTemperatureController
from e3rl.control.tracker import DifficultyTracker
from e3rl.metrics import group_outcome_fractions

__all__ = ["CONTROL_STATE_FORMAT", "E3Control", "Plan"]

CONTROL_STATE_FORMAT = 1
"""Version of :meth:`E3Control.state_dict`'s layout; a different one is refused on load."""

LENGTH_BIAS_NOTICE = "length bias: no difficulty history yet, not applied this step"

_TOTALS = (
    "rollouts",
    "rollouts_mixed",
    "exp_rollouts_mixed",
    "exp_rollouts_mixed_uniform",
    "prompts_rolled",
    "prompts_skipped",
    "rollouts_skipped",
)


@dataclass(frozen=True)
class Plan:
    """One step's allocation: ``counts[i]`` rollouts for ``prompt_ids[i]`` (0 = skipped), the
    rank each prompt had when it was planned (before this step's results), the temperature."""

    prompt_ids: list[str]
    counts: list[int]
    ranks: list[float]
    temperature: float
    epoch: int
    step: int


class E3Control:
    """Difficulty tracker, allocator, optional temperature controller and length bias.

    ``n`` is the mean number of rollouts per prompt: a step's budget is ``n * prompts`` unless
    :meth:`plan` is given another. ``controller=None`` keeps ``fixed_temperature``.
    ``length_bias=(mu, threshold)``; ``mu = 0`` turns it off. ``seed`` seeds the allocator's
    random draws (the value allocator's re-checks). ``max_deferrals``, ``recheck_prob``,
    ``prior``, ``objective`` and ``prior_fit`` are :meth:`select`'s and the expected-share
    metrics' (see :mod:`e3rl.control.selection`). ``skip_below > 0``: :meth:`plan` gives 0
    rollouts to the prompts whose forecast chance of a mixed group is below it
    (:func:`~e3rl.control.allocation.skip_unlikely`, re-checked with ``recheck_prob``).
    """

    def __init__(
        self,
        tracker: DifficultyTracker,
        allocator: Allocator,
        n: int,
        controller: EntropyTemperatureController | None = None,
        fixed_temperature: float = 1.0,
        length_bias: tuple[float, float] = (0.0, 0.1),
        seed: int = 0,
        max_deferrals: int = 2,
        recheck_prob: float = 0.0,
        prior: tuple[float, float] = (1.0, 1.0),
        objective: str = "mixed",
        prior_fit: bool = False,
        skip_below: float = 0.0,
    ) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0 rollouts per prompt, got n={n}")
        self.tracker = tracker
        self.allocator = allocator
        self.n = int(n)
        self.controller = controller
        self.fixed_temperature = float(fixed_temperature)
        self.length_bias_mu, self.length_bias_threshold = (float(x) for x in length_bias)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.steps = 0  # steps observed; the next plan is step ``steps + 1``
        self.length_bias_skipped = 0
        self._plan: Plan | None = None
        self._rank_of: dict[str, float] = {}
        self._notices: list[str] = []
        self.pool = CandidatePool(max_deferrals)
        if not 0.0 <= recheck_prob <= 1.0:
            raise ValueError(f"recheck_prob must be in [0, 1], got recheck_prob={recheck_prob}")
        self.recheck_prob = float(recheck_prob)
        self.prior = tuple(float(x) for x in prior)
        self.prior_fit = bool(prior_fit)
        self.objective = objective
        if not 0.0 <= skip_below < 1.0:
            raise ValueError(f"skip_below must be in [0, 1), got skip_below={skip_below}")
        self.skip_below = float(skip_below)
        self.totals = dict.fromkeys(_TOTALS, 0.0)
        self._plan_metrics: dict[str, Any] = {}

    @classmethod
    def from_config(
        cls,
        budget: BudgetConfig,
        length_bias: LengthBiasConfig,
        n: int,
        initial_temperature: float,
        vocab_size: int,
        total_steps: int,
        seed: int,
        temperature: TemperatureConfig | None = None,
    ) -> E3Control:
        """The control e3rl's config sections describe; ``temperature=None``: no controller.
        Check the settings that span sections first (:func:`e3rl.config.check_method`)."""
        tracker = DifficultyTracker(
            budget.success_threshold,
            budget.decay,
            budget.rank_refresh,
            forecast=budget.forecast,
            forecast_keep=budget.forecast_keep,
        )
        controller = None
        if temperature is not None:
            controller = EntropyTemperatureController.from_config(
                temperature, initial_temperature, vocab_size, total_steps
            )
        return cls(
            tracker,
            allocator_from_config(budget, n),
            n,
            controller,
            initial_temperature,
            (length_bias.mu, length_bias.threshold),
            seed,
            budget.max_deferrals,
            budget.recheck_prob,
            tuple(budget.prior),
            budget.value_objective,
            budget.prior_fit,
            budget.skip_below,
        )

    # ---- reading

    @property
    def temperature(self) -> float:
        """The temperature of the next step's sampling and of its log-probabilities."""
        return self.controller.temperature if self.controller else self.fixed_temperature

    @property
    def target_entropy(self) -> float | None:
        """The controller's current entropy target (None: no controller or still warming up)."""
        return self.controller.target_entropy if self.controller else None

    @property
    def success_threshold(self) -> float:
        return self.tracker.success_threshold

    def notices(self) -> list[str]:
        """One-time messages for the trainer's log (each said once per run); clears them."""
        out, self._notices = self._notices, []
        return out

    # ---- one step

    def register(self, prompt_ids: Sequence[str]) -> None:
        """Make the whole training set known, so that ranks are positions among all prompts."""
        self.tracker.register(prompt_ids)

    def set_epoch(self, epoch: int) -> None:
        """Advance to ``epoch`` (0-based), closing each finished epoch in the tracker."""
        while self.epoch < epoch:
            self.tracker.end_epoch()
            self.epoch += 1

    def plan(self, prompt_ids: Sequence[str], budget: int | None = None) -> Plan:
        """Rollouts per prompt for step ``steps + 1``; ``sum(counts) == budget`` (default
        ``n * len(prompt_ids)``), or at most that with ``skip_below``; ``plan.temperature`` is
        the step's temperature."""
        ids = [str(p) for p in prompt_ids]
        budget = self.n * len(ids) if budget is None else int(budget)
        self.tracker.register(ids)
        ranks = self.tracker.ranks(ids)  # before this step's results: what the allocator sees
        step = self.steps + 1
        counts = self.allocator.allocate(ids, budget, self.tracker, self.epoch, step, self.rng)
        counts = [int(c) for c in counts]
        if sum(counts) != budget:  # the allocators guarantee it; trainers size batches by it
            raise RuntimeError(f"allocator returned {sum(counts)} rollouts for budget {budget}")
        beliefs = self._beliefs(ids)
        if self.skip_below > 0:  # drop the groups forecast to carry no signal (re-checks drawn
            recheck = self.rng.random(len(ids)) < self.recheck_prob  # one uniform a prompt)
            pm = p_mixed(*beliefs, counts)
            counts = skip_unlikely(counts, pm, self.skip_below, recheck)
        plan = Plan(ids, counts, ranks.tolist(), self.temperature, self.epoch, step)
        return self._keep(plan, skipped=budget - sum(counts), beliefs=beliefs)

    def _beliefs(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The tracker's Beta (a, b) per prompt under the current prior, before this step."""
        return self.tracker.beliefs(ids, current_prior(self.prior, self.prior_fit, self.tracker))

    def pending(self) -> list[str]:
        """Candidates deferred by :meth:`select`, oldest first: the next step's candidates must
        start with them (fresh prompts after)."""
        return self.pool.pending()

    def select(self, candidate_ids: Sequence[str], budget: int) -> Plan:
        """Rollouts per candidate for step ``steps + 1``, ``sum(counts) == budget``; a candidate
        may get 0: it is deferred (:meth:`pending`), not consumed.

        Candidates already deferred ``max_deferrals`` times are forced (rolled now), and each
        other one is forced with probability ``recheck_prob`` while the budget can roll it (one
        uniform draw per candidate from the control's rng when ``recheck_prob > 0``). Which
        candidates get how many is :func:`e3rl.control.selection.choose_counts`: the value
        allocator's exact optimum over all candidates, or the ``budget // n`` candidates of
        highest expected value for uniform (``n`` each) and rank (the paper's rule on them).
        """
        ids = [str(p) for p in candidate_ids]
        budget = int(budget)
        self.pool.check_offer(ids)
        self.tracker.register(ids)
        ranks = self.tracker.ranks(ids)
        step = self.steps + 1
        forced = self._forced(ids, budget)
        counts = choose_counts(
            self.allocator,
            ids,
            budget,
            forced,
            self.tracker,
            self.epoch,
            step,
            current_prior(self.prior, self.prior_fit, self.tracker),
            self.objective,
        )
        counts = [int(c) for c in counts]
        if sum(counts) != budget or any(c == 0 for c, m in zip(counts, forced, strict=True) if m):
            raise RuntimeError(f"selection spent {sum(counts)} of {budget} or starved a prompt")
        self.pool.settle(ids, counts)
        plan = Plan(ids, counts, ranks.tolist(), self.temperature, self.epoch, step)
        return self._keep(plan, forced=int(forced.sum()))

    def _forced(self, ids: list[str], budget: int) -> np.ndarray:
        """Candidates at their deferral bound, then re-checks while the budget can roll them."""
        forced = np.array(
            [d >= self.pool.max_deferrals for d in self.pool.deferrals(ids)], dtype=bool
        )
        room = forced_room(self.allocator, budget)
        if forced.sum() > room:
            raise RuntimeError(
                f"{int(forced.sum())} candidates are at max_deferrals={self.pool.max_deferrals} "
                f"but the budget {budget} can roll only {room}: offer fewer candidates per step"
            )
        if self.recheck_prob > 0:
            draw = self.rng.random(len(ids)) < self.recheck_prob
            for i in np.flatnonzero(draw & ~forced)[: room - int(forced.sum())]:
                forced[i] = True
        return forced

    def _keep(
        self, plan: Plan, forced: int = 0, skipped: int = 0, beliefs: tuple | None = None
    ) -> Plan:
        """Remember the plan for observe_rewards and its metrics (expected mixed shares under
        the tracker's beliefs, before this step's results; ``beliefs`` if already computed)."""
        self._plan, self._rank_of = plan, dict(zip(plan.prompt_ids, plan.ranks, strict=True))
        a, b = beliefs if beliefs is not None else self._beliefs(plan.prompt_ids)
        chosen, uniform = mixed_shares(a, b, plan.counts, self.n)
        budget = sum(plan.counts)
        rolled = sum(c > 0 for c in plan.counts)
        self._plan_metrics = {
            "prompts_rolled": rolled,
            "prompts_skipped": len(plan.counts) - rolled,
            "prompts_forced": forced,
            "rollouts_skipped": skipped,
            "prompts_pending": len(self.pool),
            "exp_frac_rollouts_mixed": chosen,
            "exp_frac_rollouts_mixed_uniform": uniform,
        }
        if budget:
            self.totals["exp_rollouts_mixed"] += chosen * budget
            self.totals["exp_rollouts_mixed_uniform"] += uniform * budget
        self.totals["prompts_rolled"] += rolled
        self.totals["prompts_skipped"] += len(plan.counts) - rolled
        self.totals["rollouts_skipped"] += skipped
        return plan

    def observe(
        self,
        prompt_ids: Sequence[str],
        rewards: Sequence[float],
        lengths: Sequence[int],
        entropy: float,
    ) -> tuple[list[float], dict[str, Any]]:
        """:meth:`observe_rewards` then :meth:`observe_entropy`; their metrics merged."""
        shaped, metrics = self.observe_rewards(prompt_ids, rewards, lengths)
        metrics.update(self.observe_entropy(entropy))
        return shaped, metrics

    def observe_rewards(
        self,
        prompt_ids: Sequence[str],
        rewards: Sequence[float],
        lengths: Sequence[int],
        ranks: Sequence[float] | None = None,
    ) -> tuple[list[float], dict[str, Any]]:
        """Record the step's rollouts (one entry each: its prompt's id, raw reward, response
        length in tokens); return the shaped rewards and metrics.

        The tracker learns from the raw rewards; the length bias uses each prompt's rank at
        planning time: those of the last :meth:`plan`, or ``ranks`` (one per rollout) for a
        trainer that planned its batch in several parts. The bias is skipped (and said once, see
        :meth:`notices`) while the tracker has seen nothing, since every rank is then arbitrary.
        """
        ids = [str(p) for p in prompt_ids]
        if ranks is None:
            missing = sorted({p for p in ids if p not in self._rank_of})
            if missing:
                raise KeyError(f"prompt ids {missing[:5]} were not in this step's plan")
            ranks = [self._rank_of[p] for p in ids]
        if not len(ids) == len(rewards) == len(lengths) == len(ranks):
            raise ValueError(
                f"one entry per rollout expected: {len(ids)} prompt ids, {len(rewards)} "
                f"rewards, {len(lengths)} lengths, {len(ranks)} ranks"
            )
        raw = [float(r) for r in rewards]
        shaped = raw
        if self.length_bias_mu > 0:
            if self.tracker.num_seen == 0:
                self.length_bias_skipped += 1
                if self.length_bias_skipped == 1:
                    self._notices.append(LENGTH_BIAS_NOTICE)
            else:
                shaped = length_biased_rewards(
                    raw,
                    [int(x) for x in lengths],
                    [float(x) for x in ranks],
                    self.length_bias_mu,
                    self.length_bias_threshold,
                    self.success_threshold,
                )
        self.tracker.update(ids, raw)
        return shaped, self._reward_metrics(ids, raw, shaped)

    def observe_entropy(self, entropy: float) -> dict[str, Any]:
        """Feed the step's token-weighted entropy (measured at the step's temperature) to the
        controller and close the step; a NaN entropy is skipped and counted by the controller."""
        used = self.temperature
        if self.controller is not None:
            self.controller.update(entropy)
        # the target this step's rule used, so that a metrics row recomputes its next_temperature
        target = self.controller.last_target if self.controller else None
        self.steps += 1
        return {
            "entropy": entropy,
            "temperature": used,
            "target_entropy": target,
            "next_temperature": self.temperature,
            "temperature_invalid_entropies": self.controller.num_invalid if self.controller else 0,
        }

    def _reward_metrics(
        self, ids: list[str], raw: list[float], shaped: list[float]
    ) -> dict[str, Any]:
        """The canonical per-step names; adapters prefix them (``e3rl/`` in verl)."""
        threshold = self.success_threshold
        alloc = allocation_stats(self._plan.counts if self._plan else [])
        out: dict[str, Any] = {
            "rollouts": len(raw),
            "reward_mean": float(np.mean(shaped)) if shaped else math.nan,
            "reward_raw_mean": float(np.mean(raw)) if raw else math.nan,
            "accuracy": float(np.mean([x >= threshold for x in raw])) if raw else math.nan,
        }
        if raw:
            groups = group_outcome_fractions(raw, ids, threshold)
            out.update(groups)
            self.totals["rollouts"] += len(raw)
            self.totals["rollouts_mixed"] += groups["frac_rollouts_mixed"] * len(raw)
        out.update(self._plan_metrics)
        out.update(
            {
                "alloc_min": alloc["min"],
                "alloc_mean": alloc["mean"],
                "alloc_max": alloc["max"],
                "alloc_hist": {str(k): v for k, v in alloc["hist"].items()},
                "length_bias_changed": sum(a != b for a, b in zip(raw, shaped, strict=True)),
                "tracker_seen": self.tracker.num_seen,
            }
        )
        return out

    # ---- checkpointing

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values and lists only (checkpoints load with ``weights_only=True`` and
        verl's as JSON); the settings stay the caller's config."""
        return {
            "format": CONTROL_STATE_FORMAT,
            "tracker": self.tracker.state_dict(),
            "controller": self.controller.state_dict() if self.controller else None,
            "rng": _plain(self.rng.bit_generator.state),
            "epoch": int(self.epoch),
            "steps": int(self.steps),
            "length_bias_skipped": int(self.length_bias_skipped),
            "pool": self.pool.state_dict(),
            "totals": {k: float(v) for k, v in self.totals.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output. A controller state is loaded only when this
        control has a controller (a run may switch temperature control off on resume)."""
        if state.get("format") != CONTROL_STATE_FORMAT:
            raise ValueError(
                f"e3rl control state has format {state.get('format')!r}, this version reads "
                f"format {CONTROL_STATE_FORMAT}: the checkpoint format changed"
            )
        self.tracker.load_state_dict(state["tracker"])
        if self.controller is not None and state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.steps = int(state["epoch"]), int(state["steps"])
        self.length_bias_skipped = int(state["length_bias_skipped"])
        # Written before selection existed: nothing pending, no totals.
        self.pool.load_state_dict(state.get("pool") or {"ids": [], "deferrals": []})
        self.totals = dict.fromkeys(_TOTALS, 0.0)
        self.totals.update({k: float(v) for k, v in (state.get("totals") or {}).items()})
        self._plan, self._rank_of, self._notices, self._plan_metrics = None, {}, [], {}

    def summary(self) -> dict[str, Any]:
        """Run totals: the share of rollouts in mixed groups (measured), what the tracker's
        posteriors expected of the counts planned and of uniform ``n`` each, prompts rolled and
        skipped (deferred or, with ``plan``, left out), rollouts not spent (``skip_below``)."""
        t = self.totals
        ratio = (lambda x: x / t["rollouts"]) if t["rollouts"] else (lambda x: math.nan)
        return {
            "frac_rollouts_mixed": ratio(t["rollouts_mixed"]),
            "exp_frac_rollouts_mixed": ratio(t["exp_rollouts_mixed"]),
            "exp_frac_rollouts_mixed_uniform": ratio(t["exp_rollouts_mixed_uniform"]),
            "prompts_rolled": int(t["prompts_rolled"]),
            "prompts_skipped": int(t["prompts_skipped"]),
            "rollouts_skipped": int(t["rollouts_skipped"]),
        }


def _plain(value: Any) -> Any:
    """numpy scalars to Python numbers, recursively (a checkpoint must hold no numpy objects)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
