"""e3rl's advantage modes and PPO loss, registered in verl's registries.

Importing this module registers (in the importing process; verl's trainer process imports it
through :mod:`e3rl.integrations.verl.trainer`):

* advantage estimators ``e3rl_grpo``, ``e3rl_drgrpo``, ``e3rl_rloo`` (``algorithm.adv_estimator``)
  -- :func:`e3rl.algos.group_advantages` on groups given by verl's per-sample ``uid``, so groups
  of different sizes are exact (no ``view(-1, n)``);
* the policy loss ``e3rl_ppo`` (``actor_rollout_ref.actor.policy_loss.loss_mode``) --
  :func:`e3rl.algos.ppo_clip_loss` aggregated by verl's own ``agg_loss`` (so the loss stays
  invariant to data-parallel sharding), with verl's clip settings.

Where they differ from verl's built-ins, on purpose: a group of one rollout gets advantage 0
(verl's grpo gives it ``r / (1 + eps)``, its rloo ``r``), and an all-equal group gets exactly 0
(verl divides float rounding noise by ``eps``). With per-prompt budgets a group of one is
possible, and it carries no relative signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from verl.trainer.ppo.core_algos import agg_loss, register_adv_est, register_policy_loss

from e3rl.algos import group_advantages, ppo_clip_loss

__all__ = ["ADVANTAGE_MODES", "e3rl_advantage", "e3rl_ppo_loss"]

ADVANTAGE_MODES = {"e3rl_grpo": "grpo", "e3rl_drgrpo": "drgrpo", "e3rl_rloo": "rloo"}


def group_ids_of(index: Any) -> torch.Tensor:
    """Integer group ids from verl's per-sample ``uid`` array (any hashable values)."""
    if index is None:
        raise ValueError(
            "e3rl advantage estimators need verl's per-sample 'uid' (index) to form groups; "
            "the batch has none"
        )
    _, inverse = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long)


def e3rl_advantage(
    mode: str,
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantages of ``mode`` broadcast over response tokens: (advantages, returns)."""
    scores = token_level_rewards.sum(dim=-1)
    with torch.no_grad():
        adv = group_advantages(scores.float(), group_ids_of(index), mode=mode, eps=epsilon)
    adv = adv.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    return adv, adv


def _register(name: str, mode: str) -> None:
    def estimator(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: Any = None,
        epsilon: float = 1e-6,
        config: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return e3rl_advantage(mode, token_level_rewards, response_mask, index, epsilon)

    estimator.__name__ = f"compute_{name}_advantage"
    estimator.__qualname__ = estimator.__name__
    estimator.__doc__ = f"e3rl's '{mode}' advantage on uid groups of any size (see e3rl.algos)."
    globals()[estimator.__name__] = estimator  # one stable object, so re-imports re-register it
    register_adv_est(name)(estimator)


for _name, _mode in ADVANTAGE_MODES.items():
    _register(_name, _mode)


@register_policy_loss("e3rl_ppo")
def e3rl_ppo_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """PPO clipped surrogate of :func:`e3rl.algos.ppo_clip_loss` with verl's actor settings.

    ``clip_ratio_low`` / ``clip_ratio_high`` (falling back to ``clip_ratio``) are the two clips;
    ``clip_ratio_c`` is the dual-clip constant (verl always applies one, default 3).
    """
    if config is None:
        raise ValueError(
            "e3rl_ppo needs verl's actor config (clip_ratio, clip_ratio_low/high, ...)"
        )
    clip = config.clip_ratio
    low = config.clip_ratio_low if config.clip_ratio_low is not None else clip
    high = config.clip_ratio_high if config.clip_ratio_high is not None else clip
    dual = config.get("clip_ratio_c", 3.0)
    # Same clamp as verl: exp of an unbounded log-ratio can overflow on stale tokens.
    log_ratio = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    losses, clipped = ppo_clip_loss(
        log_ratio, torch.zeros_like(log_ratio), advantages, low, high, dual_clip=dual
    )
    if rollout_is_weights is not None:
        losses = losses * rollout_is_weights
    loss = agg_loss(
        loss_mat=losses,
        loss_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        **config.global_batch_info,
    )
    mask = response_mask.to(losses.dtype)
    denom = mask.sum().clamp(min=1)
    # e3rl's clip indicator also counts the dual-clipped tokens (verl reports those separately).
    metrics = {
        "actor/pg_clipfrac": float(((clipped * mask).sum() / denom).item()),
        "actor/ppo_kl": float(((-log_ratio * mask).sum() / denom).item()),
    }
    return loss, metrics
