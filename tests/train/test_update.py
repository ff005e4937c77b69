"""The policy update's forward: each distinct prompt run once (`shared_prompt_logits`) gives the
same logits, loss and gradients as running every row's prompt, on ragged groups, padding and
micro-batches; and the fused AdamW that the trainer builds."""

from __future__ import annotations

import copy

import pytest
import torch

from e3rl.config import AlgoConfig, TinyModelConfig
from e3rl.models import build_tiny_model
from e3rl.optim import implementation_of, make_optimizer
from e3rl.rollout.base import Rollouts, collate
from e3rl.update import (
    _trim,
    policy_update,
    reference_logprobs,
    response_logits,
    shared_prompt_logits,
)

# Prompts of different lengths (left padding) and groups of 1, 4, 3 and 2 samples with responses
# of different lengths (right padding). Group members are not adjacent, so micro-batches split
# groups and mix them.
PROMPT_LENGTHS = [5, 3, 7, 4]
COUNTS = [1, 4, 3, 2]
RESP_LENGTHS = [6, 1, 4, 6, 2, 5, 3, 6, 1, 4]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model(request, tiny):
    _, tok, _ = tiny
    cfg = TinyModelConfig(
        arch=request.param, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64
    )
    return build_tiny_model(cfg, tok, seed=1).float()


def _rollouts(model, seed: int = 0) -> Rollouts:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in PROMPT_LENGTHS]
    owner = [i for i, c in enumerate(COUNTS) for _ in range(c)]
    order = torch.randperm(len(owner), generator=g).tolist()  # interleave the groups
    owner = [owner[i] for i in order]
    responses = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in RESP_LENGTHS]
    zeros = {"logprobs": [[0.0] * len(r) for r in responses]}
    ids, attn, pw, rmask, t = collate(prompts, owner, responses, zeros, pad_id=0)
    r = Rollouts(
        prompt_index=torch.tensor(owner),
        input_ids=ids,
        attention_mask=attn,
        prompt_width=pw,
        response_mask=rmask,
        logprobs=t["logprobs"],
        entropy=torch.zeros_like(rmask),
        entropy_t1=torch.zeros_like(rmask),
        texts=[""] * len(owner),
        truncated=torch.zeros(len(owner), dtype=torch.bool),
    )
    # Old log-probabilities near the current ones, so ratios are near 1 and few tokens clip.
    r.logprobs = reference_logprobs(model, r, 1.0, 64, share_prompts=False) - 0.01
    return r


def _full_forward_logits(model, r: Rollouts) -> torch.Tensor:
    """Independent truth: one plain forward over every full row, logits at the positions that
    predict the response tokens."""
    pos = (r.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(
            input_ids=r.input_ids, attention_mask=r.attention_mask, position_ids=pos
        ).logits
    p = r.prompt_width
    return logits[:, p - 1 : p - 1 + r.response_mask.shape[1]]


@pytest.mark.parametrize("shared", [True, False])
def test_response_logits_match_a_plain_full_forward(model, shared):
    r = _rollouts(model)
    idx = torch.arange(len(r))
    ids, attn, p, width = _trim(r, idx)
    with torch.no_grad():
        if shared:
            got = shared_prompt_logits(model, ids, attn, p, width)
        else:
            got = response_logits(model, ids, attn, width)
    want = _full_forward_logits(model, r)[:, :width]
    mask = r.response_mask[:, :width].bool()
    assert got.shape == want.shape
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-5)


def _param_delta(model, r, adv, cfg, **kw) -> torch.Tensor:
    """Update a copy with SGD(lr=1) and no clipping: the change of its weights is minus the
    gradient that policy_update accumulated (one minibatch)."""
    m = copy.deepcopy(model).train()
    before = torch.cat([p.detach().flatten() for p in m.parameters()])
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    policy_update(m, opt, r, adv, 1.0, cfg, grad_clip=0.0, **kw)
    return torch.cat([p.detach().flatten() for p in m.parameters()]) - before


@pytest.mark.parametrize(
    "agg,micro,entropy_coef,kl",
    [
        ("token-mean", 64, 0.0, False),
        ("token-mean", 3, 0.01, False),
        ("seq-mean-token-mean", 4, 0.0, True),
        ("seq-mean-token-sum-norm", 1, 0.0, False),
        ("seq-mean-token-sum-norm", 7, 0.01, True),
    ],
)
def test_shared_prompt_update_has_the_same_gradients(model, agg, micro, entropy_coef, kl):
    r = _rollouts(model)
    adv = torch.linspace(-1.0, 1.5, len(r))
    cfg = AlgoConfig(
        loss_agg=agg, micro_batch_size=micro, entropy_coef=entropy_coef, kl_coef=0.1 if kl else 0
    )
    ref = r.logprobs + 0.05 if kl else None
    shared = _param_delta(model, r, adv, cfg, ref_logprobs=ref, share_prompts=True)
    plain = _param_delta(model, r, adv, cfg, ref_logprobs=ref, share_prompts=False)
    assert plain.norm() > 0  # a real gradient
    assert (shared - plain).norm() <= 1e-5 * plain.norm()


def test_reference_logprobs_shared_equal_plain(model):
    r = _rollouts(model, seed=3)
    a = reference_logprobs(model, r, 0.7, 4, share_prompts=True)
    b = reference_logprobs(model, r, 0.7, 4, share_prompts=False)
    torch.testing.assert_close(a * r.response_mask, b * r.response_mask, rtol=1e-5, atol=1e-5)


def test_make_optimizer_uses_the_fused_kernel_with_the_same_update():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(5, 7)), torch.nn.Parameter(torch.randn(7))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    fused = make_optimizer(ps, lr=1e-2, weight_decay=0.1)
    loop = torch.optim.AdamW(qs, lr=1e-2, weight_decay=0.1, foreach=False)
    assert implementation_of(fused) == {"fused": True, "foreach": None}
    for _ in range(3):
        grads = [torch.randn_like(p) for p in ps]
        for p, q, gr in zip(ps, qs, grads, strict=True):
            p.grad, q.grad = gr.clone(), gr.clone()
        fused.step()
        loop.step()
    for p, q in zip(ps, qs, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_make_optimizer_falls_back_without_a_fused_kernel_and_checks_the_name():
    meta = torch.nn.Parameter(torch.empty(3, device="meta"))
    assert implementation_of(make_optimizer([meta], lr=1e-3)) == {"fused": None, "foreach": True}
    with pytest.raises(ValueError, match="unknown AdamW implementation 'adam'.*fused, foreach"):
        make_optimizer([meta], lr=1e-3, implementation="adam")


@pytest.mark.slow
def test_compiled_update_has_the_same_gradients(model):
    """trainer.compile: the torch.compile'd policy gives the eager update's gradient (two
    different response widths, so a recompile or dynamic shapes are exercised too)."""
    cfg = AlgoConfig(micro_batch_size=4)
    m = copy.deepcopy(model)
    compiled = torch.compile(m)
    for seed in (0, 5):
        r = _rollouts(model, seed=seed)
        if seed == 5:  # a narrower response width than the first call
            r.response_mask[:, -2:] = 0
        adv = torch.linspace(-1.0, 1.5, len(r))
        eager = _param_delta(m, r, adv, cfg)
        before = [p.detach().clone() for p in m.parameters()]
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        policy_update(compiled, opt, r, adv, 1.0, cfg, grad_clip=0.0)
        got = torch.cat(
            [(p.detach() - b).flatten() for p, b in zip(m.parameters(), before, strict=True)]
        )
        with torch.no_grad():  # back to the weights the next round compares from
            for p, b in zip(m.parameters(), before, strict=True):
                p.copy_(b)
        assert eager.norm() > 0
        assert (got - eager).norm() <= 1e-4 * eager.norm()
