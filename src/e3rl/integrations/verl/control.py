"""The driver-side state of e3rl inside verl: tracker, allocator, temperature controller.

Framework-free on purpose (numpy + torch + e3rl only): verl's trainer calls it once per step at
three points, and it can be tested without verl.

1. :meth:`E3rlControl.allocate` -- before generation: per-prompt rollout counts (verl's
   ``__rollout_n__``) and the temperature every sample of the step is generated with.
2. :meth:`E3rlControl.observe` -- when the rewards are in: update the difficulty tracker with the
   raw rewards and return the length-biased rewards that feed the advantages.
3. :meth:`E3rlControl.end_step` -- after the update: feed the step's token-weighted entropy to the
   temperature controller; the new temperature is used by the next step.

Settings come from the ``e3rl`` section of the verl config and are validated by e3rl's own config
dataclasses, so field names, defaults and error messages are those of ``e3rl train``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from e3rl.budget import DifficultyTracker, allocation_stats, allocator_from_config
from e3rl.config import BudgetConfig, ConfigError, LengthBiasConfig, TemperatureConfig
from e3rl.rewards.length_bias import length_biased_rewards
from e3rl.temperature import EntropyTemperatureController

__all__ = ["E3rlControl", "E3rlSettings", "Allocation", "prompt_id_of"]


def prompt_id_of(messages: Any) -> str:
    """Stable id of a prompt from its chat messages (verl's ``raw_prompt``).

    verl gives every sampled prompt a fresh ``uid`` (uuid4) per step, so the tracker needs an id
    that survives across steps and epochs: a hash of the role/content pairs, identical in every
    process. Non-chat prompts (a plain string) hash their text.
    """
    if isinstance(messages, str):
        canon: Any = messages
    else:
        canon = [
            [str(m.get("role", "")), m.get("content", "")] if isinstance(m, Mapping) else str(m)
            for m in messages
        ]
    blob = json.dumps(canon, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def _section(cls: type, raw: Mapping[str, Any] | None, name: str) -> Any:
    raw = dict(raw or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown keys {unknown} in e3rl.{name}; valid: {sorted(known)}")
    try:
        return cls(**raw)
    except ConfigError as err:
        raise ConfigError(f"e3rl.{name}.{err}") from None


@dataclass
class E3rlSettings:
    """The ``e3rl`` section of a verl config (see docs/verl.md)."""

    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Difficulty tracking and allocation (fields of e3rl's budget section)."""
    temperature_control: str = "none"
    """'entropy' steers the sampling (and log-prob) temperature; 'none' keeps rollout.temperature."""
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    """Entropy-targeting controller (fields of e3rl's temperature section)."""
    length_bias: LengthBiasConfig = field(default_factory=LengthBiasConfig)
    """Length bias for the easiest prompts (mu=0: off)."""
    seed: int = 0
    """Seed of the allocator's random draws (value allocator re-checks)."""

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> E3rlSettings:
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown keys {unknown} in the e3rl section; valid: {sorted(known)}")
        control = raw.get("temperature_control", "none")
        if control not in ("none", "entropy"):
            raise ConfigError(
                f"e3rl.temperature_control={control!r} is invalid: expected 'none' or 'entropy'"
            )
        return cls(
            budget=_section(BudgetConfig, raw.get("budget"), "budget"),
            temperature_control=control,
            temperature=_section(TemperatureConfig, raw.get("temperature"), "temperature"),
            length_bias=_section(LengthBiasConfig, raw.get("length_bias"), "length_bias"),
            seed=int(raw.get("seed", 0)),
        )


@dataclass(frozen=True)
class Allocation:
    """What one step's prompts get: counts (verl's ``__rollout_n__``), ranks, temperature."""

    prompt_ids: list[str]
    counts: list[int]
    ranks: list[float]
    temperature: float


def _check_n_against_budget(settings: E3rlSettings, n: int) -> None:
    b = settings.budget
    if b.allocator == "rank" and not b.n_low <= n <= b.n_high:
        raise ConfigError(
            f"actor_rollout_ref.rollout.n={n} is invalid: expected within "
            f"[e3rl.budget.n_low, e3rl.budget.n_high] = [{b.n_low}, {b.n_high}] for the rank allocator"
        )
    if b.allocator == "value" and not b.n_min <= n <= b.n_max:
        raise ConfigError(
            f"actor_rollout_ref.rollout.n={n} is invalid: expected within "
            f"[e3rl.budget.n_min, e3rl.budget.n_max] = [{b.n_min}, {b.n_max}] so that the step "
            "budget n * prompts is feasible"
        )


class E3rlControl:
    """One instance on verl's driver (the trainer process); never one per data-parallel rank.

    ``n`` is verl's ``actor_rollout_ref.rollout.n``: the step budget is ``n * prompts`` exactly, so
    everything verl still sizes by ``rollout.n`` (actor/critic mini-batches of
    ``ppo_mini_batch_size * n`` samples, the batch multiple it pads to) sees the same number of
    samples as with uniform groups; only their split between prompts changes.
    """

    def __init__(
        self,
        settings: E3rlSettings,
        n: int,
        initial_temperature: float,
        vocab_size: int,
        total_steps: int,
    ) -> None:
        _check_n_against_budget(settings, n)
        if settings.temperature.anneal and settings.temperature_control != "entropy":
            raise ConfigError(
                "e3rl.temperature.anneal=true needs e3rl.temperature_control=entropy "
                "(annealing moves the entropy target of the controller)"
            )
        self.settings = settings
        self.n = int(n)
        b = settings.budget
        self.tracker = DifficultyTracker(
            success_threshold=b.success_threshold,
            decay=b.decay,
            rank_refresh=b.rank_refresh,
            unseen="hardest",
        )
        self.allocator = allocator_from_config(b, self.n)
        self.rng = np.random.default_rng(settings.seed)
        self.fixed_temperature = float(initial_temperature)
        self.controller: EntropyTemperatureController | None = None
        if settings.temperature_control == "entropy":
            self.controller = EntropyTemperatureController.from_config(
                settings.temperature, initial_temperature, vocab_size, total_steps
            )
        self.epoch = 0
        self.step = 0
        self.length_bias_skipped = 0

    @property
    def temperature(self) -> float:
        """The temperature of the next step's generation and of its log-probabilities."""
        return self.controller.temperature if self.controller else self.fixed_temperature

    def register(self, prompt_ids: Sequence[str]) -> None:
        """Make the whole training set known, so that ranks are positions among all prompts."""
        self.tracker.register(prompt_ids)

    def set_epoch(self, epoch: int) -> None:
        """Advance to ``epoch`` (0-based), closing the finished epochs in the tracker."""
        while self.epoch < epoch:
            self.tracker.end_epoch()
            self.epoch += 1

    def allocate(self, prompt_ids: Sequence[str]) -> Allocation:
        """Counts for one batch of prompts; ``sum(counts) == n * len(prompt_ids)`` always."""
        ids = [str(p) for p in prompt_ids]
        self.tracker.register(ids)
        ranks = self.tracker.ranks(ids).tolist()
        budget = self.n * len(ids)
        counts = self.allocator.allocate(ids, budget, self.tracker, self.epoch, self.step, self.rng)
        if sum(counts) != budget:  # the allocators guarantee it; verl's mini-batches rely on it
            raise RuntimeError(
                f"allocator returned {sum(counts)} rollouts for a budget of {budget}"
            )
        return Allocation(ids, [int(c) for c in counts], ranks, self.temperature)

    def observe(
        self,
        prompt_ids: Sequence[str],
        rewards: Sequence[float],
        lengths: Sequence[int],
        ranks: Sequence[float],
    ) -> tuple[list[float], dict[str, float]]:
        """Record one step's rollouts (one entry each); return shaped rewards and metrics.

        ``ranks[i]`` is the rank prompt ``i`` had when it was allocated (what the allocator saw,
        before this step's results), as in ``e3rl train``. Length bias is skipped, and counted,
        while the tracker has seen nothing: every rank is then arbitrary.
        """
        raw = [float(r) for r in rewards]
        lb = self.settings.length_bias
        shaped = raw
        if lb.mu > 0:
            if self.tracker.num_seen == 0:
                self.length_bias_skipped += 1
            else:
                shaped = length_biased_rewards(
                    raw, lengths, ranks, lb.mu, lb.threshold, self.settings.budget.success_threshold
                )
        self.tracker.update(list(prompt_ids), raw)
        return shaped, self._group_metrics(prompt_ids, raw, shaped)

    def _group_metrics(
        self, prompt_ids: Sequence[str], raw: list[float], shaped: list[float]
    ) -> dict[str, float]:
        threshold = self.settings.budget.success_threshold
        groups: dict[str, list[bool]] = {}
        for pid, r in zip(prompt_ids, raw, strict=True):
            groups.setdefault(pid, []).append(r >= threshold)
        num = max(len(groups), 1)
        correct = sum(all(g) for g in groups.values())
        wrong = sum(not any(g) for g in groups.values())
        sizes = [len(g) for g in groups.values()]
        stats = allocation_stats(sizes)
        return {
            "e3rl/groups/all_correct_frac": correct / num,
            "e3rl/groups/all_wrong_frac": wrong / num,
            "e3rl/groups/mixed_frac": (len(groups) - correct - wrong) / num,
            "e3rl/rollouts": float(len(raw)),
            "e3rl/alloc/min": float(stats["min"]),
            "e3rl/alloc/mean": float(stats["mean"]),
            "e3rl/alloc/max": float(stats["max"]),
            "e3rl/reward/raw_mean": float(np.mean(raw)) if raw else math.nan,
            "e3rl/reward/shaped_mean": float(np.mean(shaped)) if shaped else math.nan,
            "e3rl/length_bias/changed": float(
                sum(a != b for a, b in zip(raw, shaped, strict=True))
            ),
            "e3rl/tracker/seen": float(self.tracker.num_seen),
        }

    def end_step(self, entropy: float) -> dict[str, float]:
        """Feed the step's token-weighted entropy to the controller; return the step's metrics."""
        used = self.temperature
        target = self.controller.target_entropy if self.controller else None
        if self.controller is not None:
            self.controller.update(entropy)
        self.step += 1
        return {
            "e3rl/entropy": float(entropy),
            "e3rl/temperature": used,
            "e3rl/next_temperature": self.temperature,
            "e3rl/target_entropy": math.nan if target is None else float(target),
            "e3rl/temperature_invalid_entropies": float(
                self.controller.num_invalid if self.controller else 0
            ),
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, saved next to verl's checkpoint of the same step."""
        return {
            "tracker": self.tracker.state_dict(),
            "controller": self.controller.state_dict() if self.controller else None,
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "step": self.step,
            "length_bias_skipped": self.length_bias_skipped,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        if self.controller is not None and state.get("controller") is not None:
            self.controller.load_state_dict(state["controller"])
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.length_bias_skipped = int(state.get("length_bias_skipped", 0))
