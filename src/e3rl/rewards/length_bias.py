"""Kept so that ``from e3rl.rewards.length_bias import ...`` works: the length bias is part of the
method and lives in :mod:`e3rl.control.length_bias`."""

from e3rl.control.length_bias import length_biased_rewards

__all__ = ["length_biased_rewards"]
