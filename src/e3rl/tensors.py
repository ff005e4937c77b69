"""Tensor helpers of the method: the per-token entropy, its token-weighted mean, and the logits
of a policy forward at the response positions.

The trainer, the evaluator and the rollout engines measure with these the entropy that the
temperature controller (:mod:`e3rl.control.temperature`) steers.
"""

from __future__ import annotations

import math

import torch

__all__ = ["masked_mean", "response_logits", "token_entropy"]


def token_entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy (nats) of ``softmax(logits / temperature)`` at every position.

    ``logits`` has shape ``(..., V)``; the result has shape ``(...)``. Computed from
    ``log_softmax`` in at least float32 so that large logits and half-precision inputs neither
    overflow nor lose the small probabilities. Positions masked with ``-inf`` logits contribute
    ``0 * log 0 = 0`` (and a finite gradient), not NaN.
    """
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_p = torch.log_softmax(logits.to(dtype) / temperature, dim=-1)
    p = log_p.exp()
    log_p = torch.where(p > 0, log_p, torch.zeros_like(log_p))
    return -(p * log_p).sum(dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Token-weighted mean of ``values`` where ``mask`` is set: sum over tokens / token count.

    Every response token weighs the same, so a long response counts more than a short one. This
    is not the mean of per-sequence (or per-micro-batch) means, which the reference used and which
    over-weights short responses. Masked-out positions may hold anything, NaN included. An empty
    mask gives NaN, which :class:`EntropyTemperatureController` skips as an invalid entropy.
    """
    if values.shape != mask.shape:
        raise ValueError(
            f"mask must have the shape of values, got {tuple(mask.shape)} vs {tuple(values.shape)}"
        )
    keep = mask.bool()
    count = int(keep.sum().item())
    if count == 0:
        return float("nan")
    total = values.detach().double().masked_fill(~keep, 0.0).sum()
    return float(total.item()) / count


def response_logits(model, input_ids, attention_mask, response_width: int) -> torch.Tensor:
    """Logits predicting each response token: [S, R, V] (input: prompt + R response columns).

    The last response token only predicts what follows the response, so it is not fed."""
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=pos[:, :-1],
        logits_to_keep=response_width,
        use_cache=False,
    )
    return out.logits
