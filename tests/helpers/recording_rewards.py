"""Reward functions that also write down what they scored, for end-to-end tests.

`reward.fn=recording_rewards:arith` scores exactly like the built-in `arith` and appends
{"response", "answer", "reward"} as a JSON line to the file named by E3RL_RECORD_REWARDS.
"""

from __future__ import annotations

import json
import os

from e3rl.rewards.checkers import arith_reward


def arith(response: str, answer: str, **info) -> float:
    value = arith_reward(response, answer, **info)
    with open(os.environ["E3RL_RECORD_REWARDS"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"response": response, "answer": answer, "reward": value}) + "\n")
    return value
