"""e3rl's estimators and loss in verl's registries, on ragged groups, against verl's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("verl", reason="verl is not installed: run `make test-verl` (own venv)")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

import e3rl.integrations.verl.algos  # noqa: E402,F401  (registers)

COUNTS = [5, 1, 3, 2, 7]  # per-prompt rollout counts, one group of one


def _ragged(seed=0):
    """A DataProto of len(COUNTS) uid groups of sizes COUNTS, rewards on the last token."""
    g = torch.Generator().manual_seed(seed)
    total = sum(COUNTS)
    lengths = torch.randint(1, 7, (total,), generator=g)
    mask = (torch.arange(6)[None, :] < lengths[:, None]).float()
    rewards = torch.randint(0, 2, (total,), generator=g).float() * torch.rand(total, generator=g)
    rewards[:5] = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])  # group 0 mixed
    rewards[5] = 0.7  # the group of one
    token = torch.zeros(total, 6)
    token[torch.arange(total), lengths - 1] = rewards
    uids = np.repeat(np.array([f"u{i}" for i in range(len(COUNTS))], dtype=object), COUNTS)
    order = torch.randperm(total, generator=g)  # groups interleaved, as after verl's balancing
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token[order], "response_mask": mask[order]},
        non_tensors={"uid": uids[order.numpy()]},
    )
    return data, uids[order.numpy()], rewards[order]


def _adv(data, name, **kw):
    out = compute_advantage(data, adv_estimator=name, config=OmegaConf.create({}), **kw)
    return out.batch["advantages"].clone()


def test_registered_under_verl_names():
    for name in ("e3rl_grpo", "e3rl_drgrpo", "e3rl_rloo"):
        assert core_algos.get_adv_estimator_fn(name).__module__ == "e3rl.integrations.verl.algos"
    assert core_algos.get_policy_loss_fn("e3rl_ppo") is e3rl.integrations.verl.algos.e3rl_ppo_loss


@pytest.mark.parametrize(
    ("ours", "theirs", "kw"),
    [
        ("e3rl_grpo", core_algos.AdvantageEstimator.GRPO, {}),
        ("e3rl_drgrpo", core_algos.AdvantageEstimator.GRPO, {"norm_adv_by_std_in_grpo": False}),
        ("e3rl_rloo", core_algos.AdvantageEstimator.RLOO, {}),
    ],
)
def test_matches_verl_on_groups_of_two_or_more(ours, theirs, kw):
    data, uids, rewards = _ragged()
    a = _adv(_ragged()[0], ours)
    b = _adv(data, theirs, **kw)
    mask = data.batch["response_mask"]
    sizes = {u: int((uids == u).sum()) for u in set(uids)}
    multi = torch.tensor([sizes[u] > 1 for u in uids])
    # groups of >= 2 with different rewards: same advantages, broadcast over response tokens
    flat = {u for u in sizes if rewards[torch.tensor(uids == u)].unique().numel() == 1}
    keep = multi & torch.tensor([u not in flat for u in uids])
    assert keep.sum() >= 10
    torch.testing.assert_close(a[keep], b[keep], rtol=1e-5, atol=1e-6)
    assert torch.all(a[~mask.bool()] == 0)
    # a group of one: no relative signal -> exactly 0 (verl keeps its raw reward)
    single = ~multi
    assert torch.all(a[single] == 0)
    assert not torch.allclose(b[single], torch.zeros_like(b[single]))


def test_grpo_uses_each_groups_own_size():
    """Independent truth: per-group mean / unbiased std computed by hand from the counts."""
    data, uids, rewards = _ragged(seed=3)
    adv = _adv(data, "e3rl_grpo")
    last = data.batch["response_mask"].sum(-1).long() - 1
    got = adv[torch.arange(len(adv)), last]
    for u in set(uids):
        sel = torch.tensor(uids == u)
        r = rewards[sel].double()
        if len(r) > 1 and r.std() > 0:
            want = (r - r.mean()) / (r.std() + 1e-6)
            torch.testing.assert_close(got[sel].double(), want, rtol=1e-5, atol=1e-6)


def test_policy_loss_equals_verl_vanilla():
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(6, 5, generator=g) * 3
    new = old + torch.randn(6, 5, generator=g) * 0.8  # ratios well outside [0.8, 1.28] too
    adv = torch.randn(6, 1, generator=g).expand(6, 5).clone()
    mask = (torch.rand(6, 5, generator=g) > 0.2).float()
    cfg = OmegaConf.create(
        {
            "clip_ratio": 0.2,
            "clip_ratio_low": 0.2,
            "clip_ratio_high": 0.28,
            "clip_ratio_c": 3.0,
            "global_batch_info": {},
        }
    )
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        ours, m = core_algos.get_policy_loss_fn("e3rl_ppo")(old, new, adv, mask, mode, cfg)
        theirs, vm = core_algos.get_policy_loss_fn("vanilla")(old, new, adv, mask, mode, cfg)
        torch.testing.assert_close(ours, theirs)
        assert m["actor/ppo_kl"] == pytest.approx(vm["actor/ppo_kl"], rel=1e-5)
