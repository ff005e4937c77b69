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


def test_skip_below_stops_rolling_prompts_that_are_always_right(tmp_path):
    """budget.skip_below: level 1 (always right) is forecast never mixed and gets no rollouts;
    level 2 (a coin) keeps its full groups, so the steps spend less than the budget."""
    skip = ["budget.skip_below=0.5", "budget.recheck_prob=0"]
    cfg = load_config(None, [*COMMON, *skip, f"trainer.output_dir={tmp_path}"])
    summary = train(cfg, quiet=True)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["rollouts"] for r in rows[:2]] == [16, 16]  # no history: the budget
    # Two visits of 4 right answers: Beta(9, 1), P(mixed | 4) = 1 - 9/13 - 0.013 = 0.29 < 0.5.
    late = rows[4:]
    assert all(r["alloc_by_level"].get("1", 0) == 0 for r in late), [
        r["alloc_by_level"] for r in late
    ]
    assert all(r["alloc_by_level"]["2"] == 4 for r in late)
    assert all(r["rollouts"] + r["rollouts_skipped"] == 16 for r in rows)
    assert sum(r["rollouts"] for r in rows) < 16 * len(rows)
    assert "stopped" not in summary
    assert summary["rollouts"] == sum(r["rollouts"] for r in rows)
    assert summary["rollouts_skipped"] == sum(r["rollouts_skipped"] for r in rows) > 0
