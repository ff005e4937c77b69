"""Reward functions: `reward(response, answer, **info) -> float`, chosen by name or `module:function`.

Every call goes through `RewardRunner`, which contains failures: an exception or a call over
`reward.timeout` scores 0 and is counted, so one bad sample never kills a run.
"""

from e3rl.rewards.checkers import REWARDS, resolve_reward
from e3rl.rewards.runner import RewardRunner

__all__ = ["REWARDS", "RewardRunner", "resolve_reward"]
