"""Length bias: shorter correct answers earn more on the easiest prompts.

From the authors' code, not the paper (SPEC, "Length bias"). On prompts the policy already solves,
a plain 0/1 reward gives no reason to stop at a short correct answer; here a correct answer of
``length`` tokens earns ``1 / (1 + mu * length)`` instead of 1. With ``mu = 1e-3`` a 500-token
answer earns 0.667 and a 1,000-token one 0.5, so within a group the shorter correct answers get the
larger advantage. The authors saw about 33% shorter answers at equal accuracy.

Apply it to the raw rewards *before* group normalisation: normalisation is what turns the length
differences between correct answers into advantages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["length_biased_rewards"]


def length_biased_rewards(
    rewards: Sequence[float],
    lengths: Sequence[int],
    ranks: Sequence[float],
    mu: float = 1e-3,
    threshold: float = 0.1,
    success_threshold: float = 1.0,
) -> list[float]:
    """Rewards with the length bias applied to correct answers on the easiest prompts.

    All three sequences are per rollout: ``rewards[i]`` is rollout ``i``'s reward, ``lengths[i]``
    its number of response tokens, and ``ranks[i]`` the difficulty rank of its prompt (0 =
    easiest, in ``[0, 1)``). A rollout is biased when its prompt's rank is below ``threshold`` and
    its reward is at least ``success_threshold`` (correct); its reward then becomes
    ``1 / (1 + mu * length)``. Wrong answers and prompts outside the easiest ``threshold``
    fraction keep their reward. ``threshold = 0`` turns the bias off; ``mu = 0`` makes every
    correct reward exactly 1. Pure: the inputs are not modified.
    """
    rewards, lengths, ranks = list(rewards), list(lengths), list(ranks)
    if not (math.isfinite(mu) and mu >= 0):
        raise ValueError(f"mu must be finite and >= 0, got {mu}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if len(lengths) != len(rewards):
        raise ValueError(f"lengths has {len(lengths)} entries but rewards has {len(rewards)}")
    if len(ranks) != len(rewards):
        raise ValueError(f"ranks has {len(ranks)} entries but rewards has {len(rewards)}")
    if any(length < 0 for length in lengths):
        raise ValueError(f"lengths must be >= 0, got {min(lengths)}")

    biased = []
    for reward, length, rank in zip(rewards, lengths, ranks, strict=True):
        if rank < threshold and reward >= success_threshold:
            biased.append(1.0 / (1.0 + mu * float(length)))
        else:
            biased.append(float(reward))
    return biased
