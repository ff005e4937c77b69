"""Entropy-targeting sampling temperature, with optional late annealing of the target.

RL sharpens the policy, so the entropy of its samples falls and exploration dies. The controller
raises the sampling temperature when the measured entropy is below the target and lowers it when
above, using the authors' multiplicative rule (SPEC, "Temperature controller"):

    T <- T * (1 + T * ln(H* / H) / (ln V + ln ln V))

``ln V + ln ln V`` scales the step: the entropy of a ``V``-way softmax lives in ``[0, ln V]``.
The extra factor ``T`` makes the step relative to the current temperature.

Defects of the reference implementation fixed here: the temperature is clamped to
``[min_temperature, max_temperature]``; a zero, negative or non-finite entropy is skipped (and
counted) instead of dividing by zero or poisoning the temperature with NaN; annealing progress is
capped at 1 so that steps past ``total_steps`` keep the final target instead of raising it again.

Pure Python: the entropy it is fed is measured elsewhere (``e3rl.tensors``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["EntropyTemperatureController"]

_STATE_KEYS = (
    "temperature",
    "target_entropy",
    "initial_target_entropy",
    "warmup_entropies",
    "step",
    "num_invalid",
)


def _is_valid_entropy(value: float) -> bool:
    """An entropy the update rule can use: ``ln(H*/H)`` needs a finite, positive ``H``."""
    return math.isfinite(value) and value > 0.0


class EntropyTemperatureController:
    """Keeps the policy's token entropy at a target by adjusting the sampling temperature.

    Call :meth:`update` once per training step, with the token-mean entropy of that step's
    on-policy batch measured at the temperature that sampled it. Call number ``s`` (1, 2, ...):

    * ``s <= warmup_steps``: the entropy is recorded; the temperature does not change.
    * ``s == warmup_steps + 1``: unless ``target_entropy`` was given, the target becomes the mean
      of the recorded entropies (``H*_0``).
    * ``s > warmup_steps``: the temperature moves by the rule in the module docstring, clamped.
      Then, if annealing is on and ``s >= s_a = S - floor(anneal_ratio * S)``, the target becomes
      ``H*_0 * (f + (1 - f) * (1 + cos(pi * min(1, (s - s_a) / (S - s_a)))) / 2)``, so the update
      at step ``s`` uses the target as it stood after step ``s - 1``. Past ``S`` the target stays at
      ``f * H*_0``; with ``S == s_a`` (empty window) the progress counts as 1 from ``s_a`` on.

    Invalid entropies (non-finite or ``<= 0``) are never an error: the temperature is kept, the
    value is not recorded, and :attr:`num_invalid` counts it; the step count (and with it the
    annealing schedule) still advances, since the schedule follows training steps. If warm-up ends
    without a single valid entropy, :attr:`target_entropy` stays ``None`` and the temperature is
    held until the first valid entropy arrives; that value becomes the target (so that step's
    update is a no-op) and annealing then scales it.
    """

    @classmethod
    def from_config(
        cls, t: Any, initial_temperature: float, vocab_size: int, total_steps: int
    ) -> EntropyTemperatureController:
        """The controller a `TemperatureConfig` (`temperature.*`) describes."""
        return cls(
            initial_temperature=initial_temperature,
            vocab_size=vocab_size,
            warmup_steps=t.warmup_steps,
            target_entropy=t.target_entropy,
            min_temperature=t.min_temperature,
            max_temperature=t.max_temperature,
            anneal=t.anneal,
            total_steps=max(int(total_steps), 1),
            anneal_ratio=t.anneal_ratio,
            anneal_factor=t.anneal_factor,
        )

    def __init__(
        self,
        initial_temperature: float,
        vocab_size: int,
        warmup_steps: int = 1,
        target_entropy: float | None = None,
        min_temperature: float = 0.1,
        max_temperature: float = 3.0,
        anneal: bool = False,
        total_steps: int | None = None,
        anneal_ratio: float = 0.4,
        anneal_factor: float = 0.9,
    ) -> None:
        _validate(
            initial_temperature,
            vocab_size,
            warmup_steps,
            target_entropy,
            min_temperature,
            max_temperature,
            anneal,
            total_steps,
            anneal_ratio,
            anneal_factor,
        )
        self._vocab_size = int(vocab_size)
        log_v = math.log(self._vocab_size)
        self._scale = log_v + math.log(log_v)
        self._warmup_steps = int(warmup_steps)
        self._min_temperature = float(min_temperature)
        self._max_temperature = float(max_temperature)
        self._anneal = bool(anneal)
        self._total_steps = None if total_steps is None else int(total_steps)
        self._anneal_factor = float(anneal_factor)
        self._anneal_start: int | None = None
        if self._total_steps is not None:
            # round() first: 0.29 * 100 == 28.999999999999996 would floor to 28, not 29.
            window = math.floor(round(anneal_ratio * self._total_steps, 9))
            self._anneal_start = self._total_steps - window

        self._temperature = float(initial_temperature)
        given = None if target_entropy is None else float(target_entropy)
        self._target_entropy: float | None = given
        self._initial_target_entropy: float | None = given
        self._warmup_entropies: list[float] = []
        self._step = 0
        self._num_invalid = 0
        self._last_target: float | None = None

    # Read-only views of the state.

    @property
    def temperature(self) -> float:
        """The temperature to sample the next step with."""
        return self._temperature

    @property
    def target_entropy(self) -> float | None:
        """The current target entropy; ``None`` until warm-up has produced one."""
        return self._target_entropy

    @property
    def last_target(self) -> float | None:
        """The target the last :meth:`update` steered toward: at the first step after warm-up,
        the one that step set, which :attr:`target_entropy` did not yet show before it."""
        return self._last_target

    @property
    def step(self) -> int:
        """Number of :meth:`update` calls so far."""
        return self._step

    @property
    def num_invalid(self) -> int:
        """Number of entropies skipped for being non-finite or non-positive."""
        return self._num_invalid

    def update(self, entropy: float) -> float:
        """Take one training step's entropy; return the temperature for the next step."""
        value = float(entropy)
        self._step += 1
        valid = _is_valid_entropy(value)
        if not valid:
            self._num_invalid += 1

        if self._step <= self._warmup_steps:
            if valid:
                self._warmup_entropies.append(value)
            self._last_target = self._target_entropy
            return self._temperature

        if self._initial_target_entropy is None:
            if self._warmup_entropies:
                mean = sum(self._warmup_entropies) / len(self._warmup_entropies)
                self._initial_target_entropy = mean
            elif valid:
                # Warm-up produced nothing usable: the first valid entropy is the target.
                self._initial_target_entropy = value
            self._target_entropy = self._initial_target_entropy
        self._last_target = self._target_entropy

        if valid and self._target_entropy is not None:
            self._temperature = self._next_temperature(value, self._target_entropy)
        if self._anneal and self._initial_target_entropy is not None:
            self._target_entropy = self._annealed_target(self._initial_target_entropy)
        return self._temperature

    def _next_temperature(self, entropy: float, target: float) -> float:
        """The multiplicative rule, clamped (a large overshoot would otherwise go negative)."""
        t = self._temperature
        proposed = t * (1.0 + t * math.log(target / entropy) / self._scale)
        return min(max(proposed, self._min_temperature), self._max_temperature)

    def _annealed_target(self, initial: float) -> float:
        """The cosine-annealed target after step ``self._step``."""
        assert self._anneal_start is not None and self._total_steps is not None
        start, end = self._anneal_start, self._total_steps
        if self._step < start:
            return initial
        progress = 1.0 if end == start else min(1.0, (self._step - start) / (end - start))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        f = self._anneal_factor
        return initial * (f + (1.0 - f) * cosine)

    # Checkpointing.

    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable state; :meth:`load_state_dict` restores it exactly.

        Only state is saved, not the constructor settings: a resumed run may legitimately change
        e.g. ``total_steps`` and keep its controller.
        """
        return {
            "temperature": self._temperature,
            "target_entropy": self._target_entropy,
            "initial_target_entropy": self._initial_target_entropy,
            "warmup_entropies": list(self._warmup_entropies),
            "step": self._step,
            "num_invalid": self._num_invalid,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        missing = [key for key in _STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"temperature controller state is missing keys {missing}")
        self._temperature = float(state["temperature"])
        self._target_entropy = _optional_float(state["target_entropy"])
        self._initial_target_entropy = _optional_float(state["initial_target_entropy"])
        self._warmup_entropies = [float(v) for v in state["warmup_entropies"]]
        self._step = int(state["step"])
        self._num_invalid = int(state["num_invalid"])


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _validate(
    initial_temperature: float,
    vocab_size: int,
    warmup_steps: int,
    target_entropy: float | None,
    min_temperature: float,
    max_temperature: float,
    anneal: bool,
    total_steps: int | None,
    anneal_ratio: float,
    anneal_factor: float,
) -> None:
    """Reject settings the update rule cannot work with, naming the argument and its range."""
    if vocab_size < 3:
        raise ValueError(f"vocab_size must be >= 3 (so that ln ln V > 0), got {vocab_size}")
    if not (math.isfinite(min_temperature) and min_temperature > 0):
        raise ValueError(f"min_temperature must be finite and > 0, got {min_temperature}")
    if not (math.isfinite(max_temperature) and max_temperature >= min_temperature):
        raise ValueError(
            f"max_temperature must be finite and >= min_temperature ({min_temperature}), "
            f"got {max_temperature}"
        )
    if not min_temperature <= initial_temperature <= max_temperature:
        raise ValueError(
            f"initial_temperature must be in [min_temperature, max_temperature] = "
            f"[{min_temperature}, {max_temperature}], got {initial_temperature}"
        )
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if target_entropy is not None and not _is_valid_entropy(float(target_entropy)):
        raise ValueError(f"target_entropy must be finite and > 0 (or None), got {target_entropy}")
    if total_steps is not None and total_steps < 1:
        raise ValueError(f"total_steps must be >= 1 (or None), got {total_steps}")
    if anneal and total_steps is None:
        raise ValueError("total_steps must be given (>= 1) when anneal is True")
    if not 0.0 <= anneal_ratio <= 1.0:
        raise ValueError(f"anneal_ratio must be in [0, 1], got {anneal_ratio}")
    if not 0.0 < anneal_factor <= 1.0:
        raise ValueError(f"anneal_factor must be in (0, 1], got {anneal_factor}")
