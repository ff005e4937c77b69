"""Batch construction with per-prompt counts on verl's real dataset, dataloader and DataProto."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("verl", reason="verl is not installed: run `make test-verl` (own venv)")

from verl import DataProto  # noqa: E402
from verl.trainer.ppo.ray_trainer import compute_advantage  # noqa: E402

from e3rl.budget import value_allocation  # noqa: E402
from e3rl.config import ConfigError  # noqa: E402
from e3rl.integrations.verl.agent_loop import TEMPERATURE_KEY  # noqa: E402
from e3rl.integrations.verl.batch import (  # noqa: E402
    ROLLOUT_N_KEY,
    add_at_last_token,
    final_session_rows,
    non_tensor_list,
    token_weighted_entropy,
)
from e3rl.integrations.verl.control import prompt_id_of  # noqa: E402
from e3rl.integrations.verl.trainer import E3rlSyncTrainer, check_config  # noqa: E402


def _trainer(compose, *overrides):
    """The real trainer with verl's tokenizer and dataloader set up (no Ray workers needed)."""
    trainer = E3rlSyncTrainer(compose(*overrides))
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer.global_steps = 1
    return trainer


def test_rollout_n_written_from_the_allocator(verl_config):
    trainer = _trainer(
        verl_config,
        "e3rl.budget.allocator=value",
        "e3rl.budget.n_min=1",
        "e3rl.budget.n_max=8",
        "e3rl.budget.recheck_prob=0",
    )
    assert len(trainer.e3rl.tracker) == 16  # the whole training set is registered
    batch = trainer._next_train_batch()
    counts = batch[ROLLOUT_N_KEY]
    assert counts.dtype == torch.int64 and counts.shape == (4,)
    # rollout.n * train_batch_size: the sample count verl sizes its mini-batches by
    assert int(counts.sum()) == 4 * 4
    assert torch.all(batch[TEMPERATURE_KEY] == 1.0)
    ids = [prompt_id_of(m) for m in non_tensor_list(batch["raw_prompt"])]
    uids = [str(u) for u in non_tensor_list(batch["uid"])]
    assert [trainer._e3rl_uids[u][0] for u in uids] == ids
    # verl's worker indexes each prompt's fields: a 0-d tensor that range() accepts
    assert [len(range(counts[i])) for i in range(4)] == counts.tolist()

    # feed one step; the next allocation is e3rl's value rule on the tracker's counts
    owners = [ids[i] for i in range(4) for _ in range(int(counts[i]))]
    rewards = [float(p == ids[0] or (p == ids[1] and j % 2 == 0)) for j, p in enumerate(owners)]
    trainer.e3rl.observe(owners, rewards, [4] * len(owners), [0.0] * len(owners))
    trainer.e3rl.end_step(1.0)
    again = trainer.e3rl.allocate(ids)
    s, f = trainer.e3rl.tracker.successes_failures(ids)
    assert s.tolist() == [
        sum(r for o, r in zip(owners, rewards, strict=True) if o == p) for p in ids
    ]
    assert again.counts == value_allocation(s, f, 16, 1, 8, (1.0, 1.0), 0.0)


def test_selection_submits_the_chosen_and_offers_the_deferred_again(verl_config):
    """8 candidates for 4 prompts' budget: the batch verl gets holds only the prompts with
    rollouts (verl samples that many from its replay buffer), rebuilt from the dataset with
    fresh uids; the deferred ones lead the next step's candidates."""
    trainer = _trainer(
        verl_config,
        "e3rl.budget.allocator=value",
        "e3rl.budget.n_min=0",
        "e3rl.budget.n_max=8",
        "e3rl.candidates_per_step=8",
    )
    batch = trainer._next_train_batch()
    counts = batch[ROLLOUT_N_KEY]
    assert int(counts.sum()) == 4 * 4 and bool(torch.all(counts > 0))
    assert trainer._e3rl_submitted == len(counts)
    pending = trainer.e3rl.control.pending()
    assert len(pending) + len(counts) == 8
    ids = [prompt_id_of(m) for m in non_tensor_list(batch["raw_prompt"])]
    assert not set(ids) & set(pending)
    uids = [str(u) for u in non_tensor_list(batch["uid"])]
    assert len(set(uids)) == len(uids) and [trainer._e3rl_uids[u][0] for u in uids] == ids
    owners = [ids[i] for i in range(len(ids)) for _ in range(int(counts[i]))]
    trainer.e3rl.observe(owners, [0.0] * len(owners), [4] * len(owners), [0.0] * len(owners))
    trainer.e3rl.end_step(1.0)
    again = trainer.e3rl.candidates(trainer._e3rl_fetch_ids)
    assert again[: len(pending)] == pending and len(again) == 8


def test_ragged_dataproto_groups_by_uid(verl_config):
    """The per-prompt counts expand a prompt batch into uid groups of those sizes, and verl's
    advantage pipeline with e3rl_grpo normalises within each."""
    trainer = _trainer(
        verl_config,
        "e3rl.budget.allocator=rank",
        "e3rl.budget.n_low=1",
        "e3rl.budget.n_high=7",
        "e3rl.budget.widen_every=1",
    )
    trainer.global_steps = 2
    trainer.e3rl.step = 3  # widened bounds: counts can differ
    batch = trainer._next_train_batch()
    uids = np.array([str(u) for u in non_tensor_list(batch["uid"])], dtype=object)
    counts = batch[ROLLOUT_N_KEY].numpy()
    assert len(set(counts.tolist())) > 1, counts
    rows = np.repeat(np.arange(4), counts)
    lengths = torch.arange(len(rows)) % 3 + 1
    mask = (torch.arange(3)[None] < lengths[:, None]).float()
    reward = torch.zeros(len(rows), 3)
    reward[torch.arange(len(rows)), lengths - 1] = (torch.arange(len(rows)) % 2).float()
    data = DataProto.from_dict(
        tensors={"token_level_rewards": reward, "response_mask": mask},
        non_tensors={"uid": uids[rows]},
    )
    out = compute_advantage(data, adv_estimator="e3rl_grpo")
    scalar = out.batch["advantages"][torch.arange(len(rows)), lengths - 1]
    for i, c in enumerate(counts):
        group = scalar[torch.tensor(rows == i)]
        assert len(group) == c
        if c > 1:
            assert abs(float(group.sum())) < 1e-4  # centred within its own group


def test_check_config_rejects_what_it_cannot_honour(verl_config):
    with pytest.raises(ConfigError, match="trainer.v1.trainer_mode='colocate_async'"):
        check_config(verl_config("trainer.v1.trainer_mode=colocate_async"))
    with pytest.raises(ConfigError, match="data.train_batch_size=4 is invalid"):
        check_config(verl_config("actor_rollout_ref.actor.ppo_mini_batch_size=3"))
    with pytest.raises(ConfigError, match="e3rl.length_bias.mu"):
        check_config(verl_config("e3rl.length_bias.mu=-1"))


def test_session_rows_entropy_and_reward_shift():
    keys = ["a_0_0", "a_1_0", "a_1_1", "b_0_0", "a_1_2"]
    assert final_session_rows(keys) == [0, 3, 4]
    nested = torch.nested.as_nested_tensor(
        [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5])], layout=torch.jagged
    )
    mask = torch.nested.as_nested_tensor(
        [torch.tensor([1, 1, 0]), torch.tensor([1])], layout=torch.jagged
    )
    assert token_weighted_entropy(nested, mask) == pytest.approx((1 + 2 + 0.5) / 3)
    assert math.isnan(token_weighted_entropy(torch.zeros(2, 2), torch.zeros(2, 2)))
    shifted = add_at_last_token(nested, mask, [-0.25, 0.0])
    assert shifted.unbind()[0].tolist() == [1.0, 1.75, 3.0]
    assert shifted.unbind()[1].tolist() == [0.5]
