import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e3rl.algos import (
    ADVANTAGES,
    aggregate,
    group_advantages,
    kl_penalty,
    ppo_clip_loss,
    register_advantage,
)


def test_grpo_ragged_groups_by_hand():
    # groups: {0: [1, 0, 0]}, {5: [1, 1]}, {2: [1]}, {9: [0.5]}
    r = torch.tensor([1.0, 0, 0, 1, 1, 1, 0.5])
    g = torch.tensor([0, 0, 0, 5, 5, 2, 9])
    adv = group_advantages(r, g, "grpo", eps=0.0)
    # mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = sqrt(1/3)
    std = math.sqrt(1 / 3)
    expected = [(2 / 3) / std, -(1 / 3) / std, -(1 / 3) / std, 0, 0, 0, 0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)


def test_drgrpo_and_rloo_by_hand():
    r = torch.tensor([1.0, 0, 0, 0.0, 1.0])
    g = torch.tensor([3, 3, 3, 4, 4])
    assert group_advantages(r, g, "drgrpo").tolist() == pytest.approx(
        [2 / 3, -1 / 3, -1 / 3, -0.5, 0.5]
    )
    # rloo: r_i - mean of the others
    assert group_advantages(r, g, "rloo").tolist() == pytest.approx([1.0, -0.5, -0.5, -1.0, 1.0])


def test_groups_need_not_be_contiguous():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    g = torch.tensor([1, 2, 1, 2])
    a = group_advantages(r, g, "grpo")
    assert a[0] == pytest.approx(-a[2]) and a[3] == pytest.approx(-a[1])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 1)), min_size=1, max_size=40))
def test_advantages_sum_to_zero_per_group(pairs):
    g = torch.tensor([p[0] for p in pairs])
    r = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
    for mode in ("grpo", "drgrpo", "rloo"):
        a = group_advantages(r, g, mode)
        assert torch.isfinite(a).all()
        for gid in g.unique():
            sel = g == gid
            assert float(a[sel].sum()) == pytest.approx(0.0, abs=1e-3)
            if sel.sum() == 1:
                assert float(a[sel]) == 0.0


def test_bad_advantage_inputs():
    with pytest.raises(ValueError, match="unknown advantage mode"):
        group_advantages(torch.ones(2), torch.zeros(2), "nope")
    with pytest.raises(ValueError, match="equal length"):
        group_advantages(torch.ones(3), torch.zeros(2))


def test_ppo_clip_values():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    old = torch.zeros(1, 3)
    # ratio 1.5, 0.5, 1.1; clip 0.2 -> [0.8, 1.2]
    pos, clipped = ppo_clip_loss(logp, old, torch.tensor([[1.0]]), 0.2, 0.2)
    assert pos.tolist()[0] == pytest.approx([-1.2, -0.5, -1.1])  # max(-A r, -A clip(r))
    assert clipped.tolist()[0] == [1.0, 0.0, 0.0]
    neg, clipped = ppo_clip_loss(logp, old, torch.tensor([[-1.0]]), 0.2, 0.2)
    assert neg.tolist()[0] == pytest.approx([1.5, 0.8, 1.1])
    assert clipped.tolist()[0] == [0.0, 1.0, 0.0]
    # clip-higher: clip_high 0.6 lets the 1.5 ratio through
    hi, _ = ppo_clip_loss(logp, old, torch.tensor([[1.0]]), 0.2, 0.6)
    assert hi.tolist()[0] == pytest.approx([-1.5, -0.5, -1.1])


def test_dual_clip_caps_negative_advantage_loss():
    logp = torch.log(torch.tensor([[10.0, 2.0]]))
    loss, _ = ppo_clip_loss(
        logp, torch.zeros(1, 2), torch.tensor([[-1.0]]), 0.2, 0.2, dual_clip=3.0
    )
    assert loss.tolist()[0] == pytest.approx([3.0, 2.0])  # min(max(10, 1.2), 3) and 2


def test_kl_estimators():
    logp = torch.tensor([0.0, -1.0])
    ref = torch.tensor([-0.5, -0.5])
    assert kl_penalty(logp, ref, "k1").tolist() == pytest.approx([0.5, -0.5])
    # k3 = exp(ref - logp) - (ref - logp) - 1
    expect = [math.exp(-0.5) + 0.5 - 1, math.exp(0.5) - 0.5 - 1]
    assert kl_penalty(logp, ref, "k3").tolist() == pytest.approx(expect)
    assert (kl_penalty(torch.randn(100), torch.randn(100), "k3") >= 0).all()


def test_aggregation_modes_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert float(aggregate(loss, mask, "token-mean")) == pytest.approx(10 / 4)
    assert float(aggregate(loss, mask, "seq-mean-token-mean")) == pytest.approx((2 + 4) / 2)
    assert float(aggregate(loss, mask, "seq-mean-token-sum-norm")) == pytest.approx(
        (6 / 3 + 4 / 3) / 2
    )


def test_micro_batches_add_up_to_the_minibatch_loss():
    torch.manual_seed(0)
    loss, mask = torch.rand(6, 5), (torch.rand(6, 5) > 0.3).float()
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        whole = aggregate(loss, mask, mode)
        parts = sum(
            aggregate(loss[i : i + 2], mask[i : i + 2], mode, num_tokens=mask.sum(), num_seqs=6)
            for i in range(0, 6, 2)
        )
        assert float(parts) == pytest.approx(float(whole), rel=1e-6)


def test_an_advantage_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="'grpo' is already registered"):
        register_advantage("grpo")(lambda rewards, group_ids, eps: rewards)
    assert ADVANTAGES["grpo"].__name__ == "grpo_advantage"
