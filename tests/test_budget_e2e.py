"""End to end: once the tracker has seen the prompts, the budget moves to the hard ones."""

import json

import pytest

from conftest import TINY
from e3rl.config_io import load_config
from e3rl.trainer import train

COMMON = [
    *TINY,
    "task.levels=[1,2]",
    "task.train_size=8",
    "data.batch_size=4",
    "rollout.n=4",
    "reward.fn=toy_rewards:by_level",
    "data.val=null",
    "trainer.total_steps=8",
]


@pytest.mark.parametrize(
    "allocator",
    [
        ["budget.allocator=rank", "budget.n_low=2", "budget.n_high=6", "budget.widen_every=1"],
        ["budget.allocator=value", "budget.n_min=1", "budget.n_max=7", "budget.recheck_prob=0"],
    ],
)
def test_allocation_moves_to_hard_prompts(tmp_path, allocator):
    cfg = load_config(None, [*COMMON, *allocator, f"trainer.output_dir={tmp_path}"])
    train(cfg, quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # Steps 1-2 see every prompt once (2 batches per epoch); from step 3 on the tracker knows.
    # Averaged over those steps: with 4 samples a level-2 group is now and then all-right.
    later = rows[2:]
    hard = sum(r["alloc_by_level"].get("2", 0) for r in later) / len(later)
    easy = sum(r["alloc_by_level"].get("1", 0) for r in later) / len(later)
    assert hard > easy + 0.5, [r["alloc_by_level"] for r in rows]
    assert all(r["rollouts"] == 16 for r in rows)
