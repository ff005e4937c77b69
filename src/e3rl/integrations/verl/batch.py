"""Pure helpers between verl's batches and :class:`~e3rl.integrations.verl.control.E3rlControl`.

They operate on the objects verl's v1 trainer really passes around: the prompt ``TensorDict`` its
dataloader produces, TransferQueue keys ``{uid}_{session_id}_{index}``, and jagged (nested)
per-token tensors. Kept apart from the trainer so each can be tested on real verl objects without
a Ray cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from e3rl.integrations.verl.agent_loop import TEMPERATURE_KEY
from e3rl.integrations.verl.control import Allocation

__all__ = [
    "ROLLOUT_N_KEY",
    "add_at_last_token",
    "annotate_batch",
    "final_session_rows",
    "non_tensor_list",
    "token_weighted_entropy",
]

ROLLOUT_N_KEY = "__rollout_n__"
"""The per-prompt rollout count verl 0.9 reads in ``AgentLoopWorkerTQ._run_prompt``
(``verl/trainer/ppo/v1/agent_loop_tq.py``: ``prompt.pop("__rollout_n__", config.n)``)."""


def non_tensor_list(value: Any) -> list[Any]:
    """A plain list from a non-tensor batch field (NonTensorStack, numpy object array, list)."""
    if hasattr(value, "tolist"):
        return list(value.tolist())
    return list(value)


def annotate_batch(batch: TensorDict, allocation: Allocation) -> TensorDict:
    """Write the per-prompt rollout counts and the sampling temperature into a prompt batch.

    verl's agent-loop worker indexes every tensor field per prompt, so ``__rollout_n__`` arrives
    as a 0-d integer tensor (``range`` accepts it) and the temperature as a 0-d float tensor, read
    by :class:`~e3rl.integrations.verl.agent_loop.E3rlSingleTurnAgentLoop`.
    """
    size = batch.batch_size[0] if batch.batch_size else len(batch)
    if len(allocation.counts) != size:
        raise ValueError(f"allocation has {len(allocation.counts)} counts for a batch of {size}")
    batch[ROLLOUT_N_KEY] = torch.tensor(allocation.counts, dtype=torch.int64)
    batch[TEMPERATURE_KEY] = torch.full((size,), float(allocation.temperature), dtype=torch.float32)
    return batch


def final_session_rows(keys: Sequence[str]) -> list[int]:
    """Row of the last output of each session, from keys ``{uid}_{session_id}_{index}``.

    A multi-turn agent loop may store several outputs per session; the last one carries the
    session's reward (verl copies it to the others), so it alone stands for the rollout.
    """
    best: dict[str, tuple[int, int]] = {}
    for row, key in enumerate(keys):
        parts = key.rsplit("_", 2)
        if len(parts) != 3:
            raise ValueError(f"unexpected TransferQueue key {key!r}: expected uid_session_index")
        session, index = f"{parts[0]}_{parts[1]}", int(parts[2])
        if session not in best or best[session][0] < index:
            best[session] = (index, row)
    return sorted(row for _, row in best.values())


def token_weighted_entropy(entropy: torch.Tensor, response_mask: torch.Tensor) -> float:
    """Sum of per-token entropies over response tokens / number of response tokens.

    Accepts verl's jagged nested tensors (one row per sample) or padded ``[B, R]`` tensors. Every
    token weighs the same wherever it sits, unlike a mean of per-micro-batch means. NaN when there
    is no response token (the controller skips it).
    """
    if entropy.is_nested:
        entropy = entropy.values()
    if response_mask.is_nested:
        response_mask = response_mask.values()
    if entropy.shape != response_mask.shape:
        raise ValueError(
            f"entropy {tuple(entropy.shape)} and response_mask {tuple(response_mask.shape)} differ"
        )
    mask = response_mask.to(torch.float64)
    count = float(mask.sum().item())
    if count == 0:
        return math.nan
    return float((entropy.detach().to(torch.float64) * mask).sum().item()) / count


def add_at_last_token(
    token_scores: torch.Tensor, response_mask: torch.Tensor, deltas: Sequence[float]
) -> torch.Tensor:
    """Jagged ``token_scores`` with ``deltas[i]`` added at row ``i``'s last response token.

    Outcome estimators use the sum of a row's token scores, so this changes the outcome reward by
    exactly ``delta`` whatever token verl's reward manager placed it on.
    """
    if not (token_scores.is_nested and response_mask.is_nested):
        raise ValueError("token_scores and response_mask must be jagged nested tensors")
    rows = []
    for i, (scores, mask) in enumerate(
        zip(token_scores.unbind(), response_mask.unbind(), strict=True)
    ):
        scores = scores.clone()
        delta = float(deltas[i])
        if delta != 0.0:
            where = torch.nonzero(mask > 0).flatten()
            if len(where) == 0:
                raise ValueError(f"row {i} has a reward change but no response token")
            scores[int(where[-1])] += delta
        rows.append(scores)
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def sums_per_row(token_scores: torch.Tensor) -> np.ndarray:
    """Outcome reward of each row: the sum of its token scores (jagged or padded)."""
    if token_scores.is_nested:
        return np.array([float(r.sum().item()) for r in token_scores.unbind()], dtype=np.float64)
    return token_scores.sum(dim=-1).double().numpy()
