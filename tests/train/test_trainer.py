import json

import pytest

from conftest import TINY
from e3rl.config_io import load_config
from e3rl.data import Batches
from e3rl.trainer import train


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


EASY_TASK = [
    *TINY,
    "reward.fn=toy_rewards:starts_with_digit",
    "optim.lr=1e-2",
    "data.batch_size=8",
    "rollout.n=8",
    "trainer.total_steps=40",
    "data.val=null",
    "trainer.seed=3",
]


def test_reward_rises_on_an_easy_task(tmp_path):
    """A random tiny model learns to start its answer with a digit (base rate about 1 in 25)."""
    cfg = load_config(None, [*EASY_TASK, f"trainer.output_dir={tmp_path}"])
    train(cfg, quiet=True)
    rewards = [r["reward_mean"] for r in _rows(tmp_path)]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.2, rewards
    assert last > 0.8, rewards


@pytest.mark.slow
def test_compiled_updates_learn_too_and_save_a_plain_model(tmp_path):
    cfg = load_config(None, [*EASY_TASK, "trainer.compile=true", f"trainer.output_dir={tmp_path}"])
    train(cfg, quiet=True)
    rewards = [r["reward_mean"] for r in _rows(tmp_path)]
    assert sum(rewards[:5]) / 5 < 0.2 and sum(rewards[-5:]) / 5 > 0.8, rewards
    from safetensors.torch import load_file

    (weights,) = (tmp_path / "final").glob("*.safetensors")
    assert not any("_orig_mod" in k for k in load_file(weights))  # the model, not the wrapper


def test_failing_reward_is_contained_and_counted(tmp_path):
    cfg = load_config(
        None,
        [
            *TINY,
            "reward.fn=toy_rewards:raises_on_odd",
            "trainer.total_steps=2",
            "data.val=null",
            f"trainer.output_dir={tmp_path}",
        ],
    )
    train(cfg, quiet=True)
    rows = _rows(tmp_path)
    assert sum(r["reward_errors"] for r in rows) > 0
    for r in rows:  # failures score 0, the rest 1: every failure is counted
        assert r["reward_errors"] == round(r["rollouts"] * (1 - r["reward_mean"]))


def test_a_reward_failing_every_call_stops_the_run(tmp_path):
    from e3rl.guards import TrainingError

    cfg = load_config(
        None,
        [
            *TINY,
            "reward.fn=toy_rewards:raises",
            "trainer.total_steps=2",
            "data.val=null",
            f"trainer.output_dir={tmp_path}",
        ],
    )
    with pytest.raises(TrainingError, match="step 1: all 16 calls .* failed .16 raised, 0 timed"):
        train(cfg, quiet=True)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_batches_cover_each_epoch_once_and_are_reproducible():
    b = Batches(num_prompts=10, batch_size=3, seed=0, shuffle=True)
    epoch0 = [b.next() for _ in range(3)]
    assert not any(new for _, new in epoch0)
    seen = sum((idx for idx, _ in epoch0), [])
    assert len(set(seen)) == 9
    idx, new = b.next()
    assert new and b.epoch == 1
    again = Batches(num_prompts=10, batch_size=3, seed=0, shuffle=True, epoch=1, position=0)
    assert again.next()[0] == idx


@pytest.mark.parametrize("allocator", ["rank", "value"])
def test_other_allocators_run_and_keep_the_budget(tmp_path, allocator):
    cfg = load_config(
        None,
        [
            *TINY,
            f"budget.allocator={allocator}",
            "budget.n_low=2",
            "budget.n_high=6",
            "budget.n_min=2",
            "budget.n_max=8",
            "budget.widen_every=1",
            "trainer.total_steps=3",
            "data.val=null",
            f"trainer.output_dir={tmp_path}",
        ],
    )
    train(cfg, quiet=True)
    for r in _rows(tmp_path):
        assert r["rollouts"] == 16
        assert sum(int(k) * v for k, v in r["alloc_hist"].items()) == 16


@pytest.mark.parametrize("n", [0, 3])
def test_log_samples_prints_that_many_responses_per_validation(tmp_path, n, monkeypatch):
    import e3rl.trainer as trainer_module

    printed = []
    monkeypatch.setattr(
        trainer_module.RunLogger, "sample", lambda self, step, text: printed.append(step)
    )
    overrides = [*TINY, "trainer.total_steps=2", "trainer.eval_every=1", "data.val_limit=5"]
    cfg = load_config(
        None, [*overrides, f"trainer.log_samples={n}", f"trainer.output_dir={tmp_path}"]
    )
    train(cfg, quiet=True)
    assert printed == [1] * n + [2] * n


def test_log_groups_records_each_prompts_rollouts_and_successes(tmp_path):
    """`groups` agrees with the step's own figures, which the controller computes from the raw
    rewards by another path: rollouts, accuracy, the mixed share and the allocation histogram."""
    overrides = [*EASY_TASK, "trainer.total_steps=4", "budget.allocator=value", "budget.n_min=0"]
    cfg = load_config(
        None, [*overrides, "trainer.log_groups=true", f"trainer.output_dir={tmp_path}"]
    )
    train(cfg, quiet=True)
    for r in _rows(tmp_path):
        groups = r["groups"]
        assert len(groups) == 8 and len({g[0] for g in groups}) == 8
        n = sum(g[1] for g in groups)
        assert n == r["rollouts"] == 64
        assert sum(g[2] for g in groups) / n == pytest.approx(r["accuracy"])
        mixed = sum(g[1] for g in groups if 0 < g[2] < g[1])
        assert mixed / n == pytest.approx(r["frac_rollouts_mixed"])
        hist = {}
        for g in groups:
            hist[str(g[1])] = hist.get(str(g[1]), 0) + 1
        assert hist == {k: v for k, v in r["alloc_hist"].items() if v}


def test_groups_are_not_logged_by_default(tmp_path):
    cfg = load_config(None, [*EASY_TASK, "trainer.total_steps=1", f"trainer.output_dir={tmp_path}"])
    train(cfg, quiet=True)
    assert "groups" not in _rows(tmp_path)[0]


@pytest.mark.parametrize("eval_n", [0, 2])
def test_validation_per_level_adds_up_to_the_whole(tmp_path, eval_n):
    """`val_by_level` (greedy, or pass@1 with trainer.eval_n) weighted by each level's prompts is
    the step's own `val_accuracy` / `val_pass@1`, computed over all prompts by another path."""
    from collections import Counter

    from e3rl.data import task_prompts

    overrides = [*TINY, "trainer.total_steps=1", "trainer.eval_every=1", "data.val_limit=14"]
    cfg = load_config(
        None, [*overrides, f"trainer.eval_n={eval_n}", f"trainer.output_dir={tmp_path}"]
    )
    train(cfg, quiet=True)
    (row,) = [r for r in _rows(tmp_path) if "val_accuracy" in r]
    counts = Counter(p.meta["level"] for p in task_prompts(cfg.task, "val")[:14])
    by_level = row["val_by_level"]
    assert sorted(by_level) == sorted(str(lv) for lv in counts)
    whole = sum(by_level[str(lv)] * c for lv, c in counts.items()) / sum(counts.values())
    assert whole == pytest.approx(row["val_pass@1" if eval_n else "val_accuracy"], abs=1e-3)
