"""Kept so that ``from e3rl.temperature import ...`` works: the code lives in
:mod:`e3rl.control.temperature` (the controller) and :mod:`e3rl.tensors` (entropy helpers)."""

from e3rl.control.temperature import EntropyTemperatureController
from e3rl.tensors import masked_mean, token_entropy

__all__ = ["EntropyTemperatureController", "masked_mean", "token_entropy"]
