"""One policy update over a step's rollouts: minibatches, micro-batches, PPO loss, optimizer step.

Log-probabilities are computed only on response positions (`logits_to_keep`) and at the
temperature that sampled the rollouts, so that the ratio to the sampling log-probabilities is 1
on the first pass. Those sampling log-probabilities serve as the "old" ones: no extra forward.
"""

from __future__ import annotations

import math

import torch

from e3rl.algos import aggregate, kl_penalty, ppo_clip_loss, token_logprobs
from e3rl.config import AlgoConfig
from e3rl.precision import autocast
from e3rl.rollout.base import Rollouts
from e3rl.rollout.kv_cache import cache_kwarg
from e3rl.tensors import (
    response_logits,  # noqa: F401  (re-exported)
    token_entropy,
)
from e3rl.train import testing


def shared_prompt_logits(
    model, input_ids, attention_mask, prompt_width: int, response_width: int
) -> torch.Tensor:
    """`response_logits` with each distinct prompt run once (its samples share it, a group's
    prompt is otherwise run once per sample): the distinct prompts go forward with a KV cache,
    the cache is expanded to the rows, then the responses go forward over it. Gradients flow
    through the shared cache back into the prompt forward, so loss and gradients are those of
    `response_logits` up to float rounding, for a fraction of the prompt tokens' cost."""
    p, width = prompt_width, response_width
    pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    # Rows with equal prompt tokens and padding share one prompt forward.
    key = torch.cat([input_ids[:, :p], attention_mask[:, :p]], dim=-1)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    u_attn = uniq[:, p:]
    out = model(
        input_ids=uniq[:, :p],
        attention_mask=u_attn,
        position_ids=(u_attn.cumsum(-1) - 1).clamp(min=0),
        logits_to_keep=1,
        use_cache=True,
    )
    first = out.logits.index_select(0, inverse)  # predicts the first response token
    if width == 1:
        return first
    cache = getattr(out, "cache", None)  # transformers >= 5.2x; before: past_key_values
    cache = out.past_key_values if cache is None else cache
    cache.reorder_cache(inverse)  # index_select: differentiable, gradients add up per prompt
    out = model(
        input_ids=input_ids[:, p : p + width - 1],
        attention_mask=attention_mask[:, : p + width - 1],
        position_ids=pos[:, p : p + width - 1],
        use_cache=True,
        **{cache_kwarg(model): cache},
    )
    return torch.cat([first, out.logits], dim=1)


def trimmed_logits(
    model, ids, attn, prompt_width: int, response_width: int, share_prompts: bool = True
) -> torch.Tensor:
    """Logits [S, R, V] of the response tokens of trimmed rows (see `_trim`): through
    `shared_prompt_logits` when some rows share a prompt and `share_prompts`, else plainly."""
    if share_prompts and prompt_width > 0 and len(ids) > 1:
        key = torch.cat([ids[:, :prompt_width], attn[:, :prompt_width]], dim=-1)
        if len(torch.unique(key, dim=0)) < len(ids):
            return shared_prompt_logits(model, ids, attn, prompt_width, response_width)
    return response_logits(model, ids, attn, response_width)


def _trim(r: Rollouts, idx: torch.Tensor):
    """Rows `idx`, with prompt columns that are padding in all of them and empty tail removed."""
    ids, attn, rmask = r.input_ids[idx], r.attention_mask[idx], r.response_mask[idx]
    p = r.prompt_width
    first = int(attn[:, :p].any(0).float().argmax()) if p else 0
    width = int(rmask.any(0).sum())  # responses are left-aligned, so this is the max length
    width = max(width, 1)
    return ids[:, first : p + width], attn[:, first : p + width], p - first, width


@torch.no_grad()
def reference_logprobs(
    ref_model,
    r: Rollouts,
    temperature: float,
    micro_batch_size: int,
    autocast_dtype: torch.dtype | None = None,
    share_prompts: bool = True,
) -> torch.Tensor:
    out = torch.zeros_like(r.logprobs)
    dev = next(ref_model.parameters()).device
    for idx in torch.arange(len(r)).split(micro_batch_size):
        ids, attn, p, width = _trim(r, idx)
        with autocast(autocast_dtype, dev):
            logits = trimmed_logits(ref_model, ids.to(dev), attn.to(dev), p, width, share_prompts)
        out[idx, :width] = token_logprobs(logits, ids[:, p : p + width].to(dev), temperature).cpu()
    return out


def policy_update(
    model,
    optimizer: torch.optim.Optimizer,
    rollouts: Rollouts,
    advantages: torch.Tensor,
    temperature: float,
    cfg: AlgoConfig,
    grad_clip: float,
    ref_logprobs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
    share_prompts: bool = True,
) -> dict[str, float]:
    """Runs cfg.ppo_epochs x cfg.minibatches optimizer steps; returns averaged statistics.

    A minibatch whose loss or gradient is not finite skips its optimizer step (weights and
    optimizer moments untouched) and is counted in `skipped_updates` (inside
    `e3rl.train.testing.nan_losses`, the testing seam, every loss is NaN). `autocast_dtype`
    (bfloat16 for mixed precision) is the dtype of the forward pass; gradients reach the float32
    weights.
    `share_prompts` runs each distinct prompt of a micro-batch once (`shared_prompt_logits`);
    False runs every row's prompt (the same loss and gradients up to rounding).
    """
    dev = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    n = len(rollouts)
    stats = {"loss": 0.0, "clip_frac": 0.0, "kl": 0.0, "grad_norm": 0.0, "entropy_train": 0.0}
    steps = skipped = 0
    tokens_seen = 0.0
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(n, generator=generator) if cfg.minibatches > 1 else torch.arange(n)
        for mb in order.tensor_split(cfg.minibatches):
            if len(mb) == 0:
                continue
            num_tokens = rollouts.response_mask[mb].sum().clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            finite = True
            for idx in mb.split(cfg.micro_batch_size):
                ids, attn, p, width = _trim(rollouts, idx)
                ids, attn = ids.to(dev), attn.to(dev)
                mask = rollouts.response_mask[idx, :width].to(dev)
                old = rollouts.logprobs[idx, :width].to(dev)
                adv = advantages[idx].to(dev)[:, None]
                with autocast(autocast_dtype, dev):
                    logits = trimmed_logits(model, ids, attn, p, width, share_prompts)
                logp = token_logprobs(logits, ids[:, p : p + width], temperature)
                loss_mat, clipped = ppo_clip_loss(
                    logp, old, adv, cfg.clip_low, cfg.clip_high, cfg.dual_clip
                )
                if ref_logprobs is not None:
                    kl = kl_penalty(logp, ref_logprobs[idx, :width].to(dev), cfg.kl_estimator)
                    loss_mat = loss_mat + cfg.kl_coef * kl
                    stats["kl"] += float((kl.detach() * mask).sum())
                if cfg.entropy_coef:
                    ent = token_entropy(logits, temperature)
                    loss_mat = loss_mat - cfg.entropy_coef * ent
                    stats["entropy_train"] += float((ent.detach() * mask).sum())
                loss = aggregate(
                    loss_mat,
                    mask,
                    cfg.loss_agg,
                    num_tokens=num_tokens,
                    num_seqs=len(mb),
                    norm_len=rollouts.response_mask.shape[1],
                )
                loss = testing.poisoned(loss)
                if not torch.isfinite(loss):  # checked before backward: no NaN reaches a gradient
                    finite = False
                    break
                loss.backward()
                stats["loss"] += float(loss.detach())
                stats["clip_frac"] += float((clipped * mask).sum())
                tokens_seen += float(mask.sum())
            norm = (
                torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
                if finite
                else None
            )
            if norm is None or not torch.isfinite(norm):
                # A non-finite loss or gradient would poison the weights and the optimizer's moments.
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                continue
            optimizer.step()
            stats["grad_norm"] += float(norm)
            steps += 1
    total = max(cfg.ppo_epochs * cfg.minibatches, 1)
    out = {
        "loss": stats["loss"] / total,
        "clip_frac": stats["clip_frac"] / max(tokens_seen, 1),
        "kl": stats["kl"] / max(tokens_seen, 1),
        "grad_norm": stats["grad_norm"] / max(steps, 1),
        "skipped_updates": skipped,
    }
    if cfg.entropy_coef:
        out["entropy_train"] = stats["entropy_train"] / max(tokens_seen, 1)
    return out
