"""The driver-side state of e3rl inside verl: a thin adapter over :class:`e3rl.control.E3Control`.

Framework-free on purpose (numpy + e3rl only): verl's trainer calls it once per step at three
points, and it can be tested without verl.

1. :meth:`E3rlControl.allocate` -- before generation: per-prompt rollout counts (verl's
   ``__rollout_n__``) and the temperature every sample of the step is generated with.
2. :meth:`E3rlControl.observe` -- when the rewards are in: update the difficulty tracker with the
   raw rewards and return the length-biased rewards that feed the advantages.
3. :meth:`E3rlControl.end_step` -- after the update: feed the step's token-weighted entropy to the
   temperature controller; the new temperature is used by the next step.

With ``e3rl.candidates_per_step`` above ``data.train_batch_size`` step 1 is
:meth:`E3rlControl.candidates` (the deferred prompts, then fresh ones from verl's dataloader,
fetched through a callback) followed by :meth:`E3rlControl.select`; prompts that get 0 stay
pending in the control and lead the next step's candidates.

The method itself (and its metrics, here under ``e3rl/``) is E3Control's, shared with ``e3rl
train``; this module only maps verl's names onto it.

Settings come from the ``e3rl`` section of the verl config and are validated by e3rl's own config
dataclasses, so field names, defaults and error messages are those of ``e3rl train``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from e3rl.config import (
    BudgetConfig,
    ConfigError,
    LengthBiasConfig,
    TemperatureConfig,
    check_method,
    check_selection,
)
from e3rl.control import E3Control
from e3rl.control.controller import CONTROL_STATE_FORMAT

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
    candidates_per_step: int = 0
    """Prompts offered per step (0 = data.train_batch_size); the rest of the budget's choice waits (budget.max_deferrals)."""

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
            candidates_per_step=int(raw.get("candidates_per_step", 0)),
        )


@dataclass(frozen=True)
class Allocation:
    """What one step's prompts get: counts (verl's ``__rollout_n__``), ranks, temperature."""

    prompt_ids: list[str]
    counts: list[int]
    ranks: list[float]
    temperature: float


# E3Control's metric names -> the names this adapter has always logged (the rest: e3rl/<name>).
_VERL_NAMES = {
    "frac_all_correct": "e3rl/groups/all_correct_frac",
    "frac_all_wrong": "e3rl/groups/all_wrong_frac",
    "frac_mixed": "e3rl/groups/mixed_frac",
    "frac_rollouts_all_correct": "e3rl/groups/rollouts_all_correct_frac",
    "frac_rollouts_all_wrong": "e3rl/groups/rollouts_all_wrong_frac",
    "frac_rollouts_mixed": "e3rl/groups/rollouts_mixed_frac",
    "alloc_min": "e3rl/alloc/min",
    "alloc_mean": "e3rl/alloc/mean",
    "alloc_max": "e3rl/alloc/max",
    "reward_raw_mean": "e3rl/reward/raw_mean",
    "reward_mean": "e3rl/reward/shaped_mean",
    "length_bias_changed": "e3rl/length_bias/changed",
    "tracker_seen": "e3rl/tracker/seen",
}


def verl_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """E3Control's metrics as verl logs them: prefixed names, floats only (None -> NaN, the
    allocation histogram left out)."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, Mapping):
            continue
        out[_VERL_NAMES.get(name, f"e3rl/{name}")] = math.nan if value is None else float(value)
    return out


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
        batch_size: int | None = None,
    ) -> None:
        check_method(
            settings.budget,
            n,
            settings.temperature_control,
            settings.temperature,
            n_key="actor_rollout_ref.rollout.n",
            prefix="e3rl.",
            control_key="e3rl.temperature_control",
            fixed_batch="verl",
        )
        self.settings = settings
        self.n = int(n)
        self.batch_size = batch_size
        self.candidates_per_step = int(settings.candidates_per_step)
        if self.selecting:
            check_selection(
                settings.budget.allocator,
                self.candidates_per_step,
                int(batch_size),
                self.n,
                settings.budget.n_min,
                (
                    "e3rl.candidates_per_step",
                    "data.train_batch_size",
                    "actor_rollout_ref.rollout.n",
                    "e3rl.budget.",
                ),
            )
        self._fetched: list[str] = []  # fresh ids taken from verl's dataloader, not yet offered
        entropy = settings.temperature_control == "entropy"
        self.control = E3Control.from_config(
            settings.budget,
            settings.length_bias,
            self.n,
            initial_temperature,
            vocab_size,
            total_steps,
            settings.seed,
            settings.temperature if entropy else None,
        )

    # The control's parts, under the names this adapter has always had.
    @property
    def tracker(self):
        return self.control.tracker

    @property
    def allocator(self):
        return self.control.allocator

    @property
    def controller(self):
        return self.control.controller

    @property
    def step(self) -> int:
        """Steps completed (the next allocation is step ``step + 1``)."""
        return self.control.steps

    @step.setter
    def step(self, value: int) -> None:
        self.control.steps = int(value)

    @property
    def epoch(self) -> int:
        return self.control.epoch

    @property
    def length_bias_skipped(self) -> int:
        return self.control.length_bias_skipped

    @property
    def temperature(self) -> float:
        """The temperature of the next step's generation and of its log-probabilities."""
        return self.control.temperature

    def register(self, prompt_ids: Sequence[str]) -> None:
        """Make the whole training set known, so that ranks are positions among all prompts."""
        self.control.register(prompt_ids)

    def set_epoch(self, epoch: int) -> None:
        """Advance to ``epoch`` (0-based), closing the finished epochs in the tracker."""
        self.control.set_epoch(epoch)

    def allocate(self, prompt_ids: Sequence[str]) -> Allocation:
        """Counts for one batch of prompts; ``sum(counts) == n * len(prompt_ids)`` always."""
        plan = self.control.plan(prompt_ids)
        return Allocation(plan.prompt_ids, plan.counts, plan.ranks, plan.temperature)

    @property
    def selecting(self) -> bool:
        """Whether steps offer more candidates than ``data.train_batch_size``."""
        if self.candidates_per_step and self.batch_size is None:
            raise ConfigError("e3rl.candidates_per_step needs the trainer's batch_size")
        return bool(self.candidates_per_step) and self.candidates_per_step > self.batch_size

    def candidates(self, fetch: Callable[[], Sequence[str]]) -> list[str]:
        """This step's candidate ids: the deferred ones (oldest first), then fresh ones.

        ``fetch()`` returns the ids of the next chunk of verl's dataloader (``gen_batch_size``
        prompts); ids fetched beyond what this step needs wait for the next one (and are saved
        with the state, since verl's dataloader state has moved past them). A fresh id that is
        already a candidate is dropped: its turn is used up, it is not offered twice.
        """
        out = self.control.pending()
        seen = set(out)
        while len(out) < self.candidates_per_step:
            if not self._fetched:
                chunk = [str(p) for p in fetch()]
                if not chunk:
                    raise RuntimeError("verl's dataloader returned an empty chunk")
                self._fetched.extend(chunk)
            pid = self._fetched.pop(0)
            if pid not in seen:
                seen.add(pid)
                out.append(pid)
        return out

    def select(self, prompt_ids: Sequence[str]) -> Allocation:
        """Counts for the step's candidates (:meth:`candidates`), ``sum == n * batch_size``; a
        candidate that gets 0 stays pending for the next step."""
        plan = self.control.select(prompt_ids, self.n * int(self.batch_size))
        return Allocation(plan.prompt_ids, plan.counts, plan.ranks, plan.temperature)

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
        shaped, metrics = self.control.observe_rewards(prompt_ids, rewards, lengths, ranks)
        self.control.notices()  # verl has no run log here; the skips are counted instead
        return shaped, verl_metrics(metrics)

    def end_step(self, entropy: float) -> dict[str, float]:
        """Feed the step's token-weighted entropy to the controller; return the step's metrics."""
        return verl_metrics(self.control.observe_entropy(float(entropy)))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, saved next to verl's checkpoint of the same step."""
        return {**self.control.state_dict(), "fetched": list(self._fetched)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "format" not in state:  # written before e3rl.control: the same parts, other names
            state = {
                "format": CONTROL_STATE_FORMAT,
                "tracker": state["tracker"],
                "controller": state.get("controller"),
                "rng": state["rng"],
                "epoch": state["epoch"],
                "steps": state["step"],
                "length_bias_skipped": state.get("length_bias_skipped", 0),
            }
        self.control.load_state_dict(state)
        self._fetched = [str(p) for p in state.get("fetched", [])]
