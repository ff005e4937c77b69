"""The authors' rank rule, transcribed as the reference for ``e3rl.control.rank_allocation``.

Source: LiaoMengqi/E3-RL4LLMs, e3/trainer/ray_trainer.py, ``get_rollout_n_per_prompt``, at commit
7e90b8e9a4901e5f99d4a11523c6123e41344816. Transcribed statement for statement (defects included:
no ``n_max`` cap on the proportional shares, ``-100`` ranks treated as 0); only the comments are
translated and the return type annotation dropped.
"""

from __future__ import annotations

import numpy as np


def get_rollout_n_per_prompt(
    rank: np.ndarray,
    total_rollout_n: int,
    rollout_n_min: int = 2,
    rollout_n_max: int = 16,
):
    """
    dynamic rollout_n
    difficult samples rollout_n will be larger
    """

    rollout_counts = np.full_like(rank, rollout_n_min)
    mask = rank == -100
    rank = rank.copy()  # copy so the caller's array is not modified
    rank[mask] = 0

    # normalise rank
    rank_sum = rank.sum()
    if rank_sum > 0:  # avoid dividing by zero
        rank = rank / (rank_sum + 1e-8)

    # extra rollouts to share
    extra_counts = (total_rollout_n - rollout_counts.sum()) * rank
    rollout_counts = rollout_counts + extra_counts

    # numpy array to integers
    rollout_counts = np.floor(rollout_counts).astype(np.int64)

    # rounding error: make the total equal total_rollout_n
    diff = total_rollout_n - rollout_counts.sum()
    if diff > 0:
        # indices by rank, descending
        sorted_indices = np.argsort(-rank)  # descending
        for i in sorted_indices:
            if diff > 0:  # noqa: SIM102 (kept as the authors wrote it)
                if rollout_counts[i] < rollout_n_max:
                    add_count = min(diff, rollout_n_max - rollout_counts[i])
                    rollout_counts[i] += add_count
                    diff -= add_count
            if diff <= 0:
                break

    return rollout_counts.tolist()
