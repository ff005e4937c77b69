"""The trainer's reward/advantage and entropy steps on verl's real TransferQueue (local Ray).

Rollout outputs are written under the keys and field layout verl's ``AgentLoopWorkerTQ`` uses
(``{uid}_{session}_{index}``; jagged ``rm_scores`` / ``response_mask``), then the trainer's own
``_compute_old_log_prob`` read-back and ``_compute_advantage`` (which ends in verl's advantage
pipeline) run on them.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow
pytest.importorskip("verl", reason="verl is not installed: run `make test-verl` (own venv)")

import ray  # noqa: E402
import transfer_queue as tq  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from tensordict import NonTensorStack, TensorDict  # noqa: E402
from transfer_queue import KVBatchMeta  # noqa: E402

from e3rl.integrations.verl.batch import ROLLOUT_N_KEY, non_tensor_list  # noqa: E402
from e3rl.integrations.verl.trainer import E3rlSyncTrainer  # noqa: E402


@pytest.fixture(scope="module")
def transfer_queue():
    # TransferQueue's controller and storage unit each reserve one *logical* Ray CPU; they sit
    # idle between calls, so this costs little real CPU.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield
    tq.close()
    ray.shutdown()


def _jagged(rows):
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def test_rewards_entropy_and_metrics_through_transfer_queue(verl_config, transfer_queue):
    cfg = verl_config(
        "e3rl.budget.allocator=rank",
        "e3rl.budget.n_low=1",
        "e3rl.budget.n_high=7",
        "e3rl.length_bias.mu=0.1",
        "e3rl.length_bias.threshold=1.0",
        "e3rl.temperature_control=entropy",
        "e3rl.temperature.target_entropy=1.0",
        "e3rl.temperature.warmup_steps=0",
    )
    trainer = E3rlSyncTrainer(cfg)
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer.global_steps = 1
    # one earlier step so the tracker has history (length bias needs ranks that mean something)
    trainer.e3rl.observe(["x"], [1.0], [1], [0.0])
    batch = trainer._next_train_batch()
    uids = [str(u) for u in non_tensor_list(batch["uid"])]
    counts = batch[ROLLOUT_N_KEY].tolist()
    keys, fields = [], []
    for k, (uid, c) in enumerate(zip(uids, counts, strict=True)):
        for s in range(c):
            length = 1 + (s + k) % 4
            reward = float((s + k) % 2)
            scores = torch.zeros(length)
            scores[-1] = reward
            keys.append(f"{uid}_{s}_0")
            fields.append((uid, scores, torch.ones(length, dtype=torch.int64), reward, length))
    td = TensorDict(
        {
            "rm_scores": _jagged([f[1] for f in fields]),
            "response_mask": _jagged([f[2] for f in fields]),
            "old_log_probs": _jagged([torch.zeros_like(f[1]) for f in fields]),
            "entropy": _jagged([torch.full_like(f[1], 0.5 + f[4]) for f in fields]),
        },
        batch_size=len(keys),
    )
    td["uid"] = NonTensorStack(*[f[0] for f in fields])
    tags = [{"status": "success", "seq_len": 4 + f[4]} for f in fields]
    tq.kv_batch_put(keys=keys, partition_id="train", fields=td, tags=tags)
    meta = KVBatchMeta(partition_id="train", keys=keys, tags=tags)

    metrics = {}
    trainer._compute_advantage(meta, metrics)
    assert metrics["e3rl/rollouts"] == len(keys) == 16
    assert metrics["e3rl/alloc/max"] == max(counts)
    assert metrics["e3rl/length_bias/changed"] == sum(f[3] == 1.0 for f in fields)
    out = tq.kv_batch_get(
        keys=keys, partition_id="train", select_fields=["rm_scores", "advantages"]
    )
    sums = [float(r.sum()) for r in out["rm_scores"].unbind()]
    want = [1 / (1 + 0.1 * f[4]) if f[3] == 1.0 else 0.0 for f in fields]
    assert sums == pytest.approx(want)
    # verl's pipeline ran e3rl_grpo on the shaped rewards, per uid group
    adv = [float(a[-1]) for a in out["advantages"].unbind()]
    for uid in set(uids):
        group = [a for a, f in zip(adv, fields, strict=True) if f[0] == uid]
        assert abs(sum(group)) < 1e-4

    # the entropy read-back: token-weighted over all response tokens
    trainer._e3rl_entropy = float("nan")
    tokens = sum(f[4] for f in fields)
    want_h = sum(f[4] * (0.5 + f[4]) for f in fields) / tokens
    data = tq.kv_batch_get(
        keys=keys, partition_id="train", select_fields=["entropy", "response_mask"]
    )
    from e3rl.integrations.verl.batch import token_weighted_entropy

    assert token_weighted_entropy(data["entropy"], data["response_mask"]) == pytest.approx(want_h)
    step = trainer.e3rl.end_step(want_h)
    assert step["e3rl/temperature"] == 1.0 and step["e3rl/next_temperature"] < 1.0  # H > target
    tq.kv_clear(keys=keys, partition_id="train")
