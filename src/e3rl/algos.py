"""Advantages, policy losses, KL estimators and loss aggregation: pure functions over tensors.

Groups have different sizes (the rollout budget differs per prompt), so nothing here reshapes
rewards to [num_prompts, n]: groups are given by a per-sample group id and reduced with scatter
operations. Advantage estimators are chosen by name through a small registry, as in verl's
core_algos.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

AdvantageFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
ADVANTAGES: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Registers an advantage estimator under ``name``; a name taken twice is an error (a
    silent overwrite would change every run that names it)."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGES:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGES[name] = fn
        return fn

    return deco


def _group_stats(rewards: torch.Tensor, group_ids: torch.Tensor):
    """Per-sample group size, group sum, group mean, and a per-group reducer."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1

    def per_group_sum(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(num_groups, dtype=x.dtype).index_add_(0, inverse, x)[inverse]

    n = per_group_sum(torch.ones_like(rewards))
    s = per_group_sum(rewards)
    return per_group_sum, n, s, s / n


@register_advantage("grpo")
def grpo_advantage(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """(r - mean_g) / (std_g + eps), unbiased std; a group of one gets 0."""
    r = rewards.double()  # float32 means of equal rewards leave rounding noise that eps amplifies
    per_group_sum, n, _, mean = _group_stats(r, group_ids)
    dev = r - mean
    std = torch.sqrt(per_group_sum(dev**2) / (n - 1).clamp(min=1))
    # An all-equal group has no signal: exactly 0 (no 0/0 when eps = 0, no rounding noise).
    flat = std <= 1e-12 * (1 + mean.abs())
    adv = torch.where(flat, torch.zeros_like(dev), dev / (std + eps).clamp(min=1e-30))
    return torch.where(n > 1, adv, torch.zeros_like(adv)).to(rewards.dtype)


@register_advantage("drgrpo")
def drgrpo_advantage(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """r - mean_g (Dr. GRPO drops the std, which over-weights near-solved and near-hopeless groups)."""
    _, n, _, mean = _group_stats(rewards, group_ids)
    adv = rewards - mean
    return torch.where(n > 1, adv, torch.zeros_like(adv))


@register_advantage("rloo")
def rloo_advantage(
    rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """r minus the mean of the other members of its group."""
    _, n, s, _ = _group_stats(rewards, group_ids)
    adv = rewards - (s - rewards) / (n - 1).clamp(min=1)
    return torch.where(n > 1, adv, torch.zeros_like(adv))


def group_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, mode: str = "grpo", eps: float = 1e-6
) -> torch.Tensor:
    """One advantage per sample from the rewards of its group (groups may differ in size)."""
    if mode not in ADVANTAGES:
        raise ValueError(f"unknown advantage mode {mode!r}; valid: {', '.join(ADVANTAGES)}")
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    group_ids = torch.as_tensor(group_ids)
    if rewards.shape != group_ids.shape or rewards.dim() != 1:
        raise ValueError(
            f"rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} must be 1-D "
            "and of equal length"
        )
    if rewards.numel() == 0:
        return rewards.clone()
    return ADVANTAGES[mode](rewards, group_ids, eps)


# --------------------------------------------------------------------------- aggregation


def aggregate(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_len: float | None = None,
) -> torch.Tensor:
    """Reduce per-token losses [S, R] to a scalar.

    `num_tokens` / `num_seqs` / `norm_len` override the denominators so that micro-batches of
    one minibatch add up to exactly the minibatch's loss (gradient accumulation without
    reweighting, and without depending on how each micro-batch was trimmed).
    """
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        denom = num_tokens if num_tokens is not None else mask.sum().clamp(min=1)
        return (loss_mat * mask).sum() / denom
    denom = num_seqs if num_seqs is not None else loss_mat.shape[0]
    if mode == "seq-mean-token-mean":
        per_seq = (loss_mat * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / denom
    if mode == "seq-mean-token-sum-norm":
        # Dr. GRPO: a constant normaliser (the response width) instead of each length.
        per_seq = (loss_mat * mask).sum(-1) / (norm_len or loss_mat.shape[-1])
        return per_seq.sum() / denom
    raise ValueError(
        f"unknown loss aggregation {mode!r}; valid: token-mean, seq-mean-token-mean, "
        "seq-mean-token-sum-norm"
    )


# --------------------------------------------------------------------------- policy loss


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss and a per-token 'was clipped' indicator.

    `advantages` broadcasts against `logp` ([S, 1] for sequence-level advantages). With dual
    clip c, the loss of a negative advantage is capped at -A * c, so one huge ratio on a bad
    sample cannot dominate the update.
    """
    ratio = torch.exp(logp - old_logp)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(loss1, loss2)
    clipped = (loss2 > loss1).float()
    if dual_clip is not None:
        capped = torch.minimum(loss, -advantages * dual_clip)
        neg = (advantages < 0).expand_as(loss)
        clipped = torch.where(neg & (loss > capped), torch.ones_like(clipped), clipped)
        loss = torch.where(neg, capped, loss)
    return loss, clipped


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from samples of pi (Schulman's k1 / k3)."""
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        # exp(-x) - (-x) - 1 >= 0, unbiased and of low variance; clamped against overflow.
        neg = (-log_ratio).clamp(-20, 20)
        return torch.exp(neg) - neg - 1
    raise ValueError(f"unknown KL estimator {kind!r}; valid: k1, k3")


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(logits / T) at the given tokens; logits [S, R, V], tokens [S, R]."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
