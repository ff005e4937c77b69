"""E3GRPOTrainer on TRL 1.16's real trainer with a tiny CPU model (`make test-trl`)."""

from __future__ import annotations

import collections
import json
import math

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from e3rl.algos import group_advantages  # noqa: E402
from e3rl.config import ConfigError  # noqa: E402
from e3rl.integrations.trl import E3GRPOTrainer  # noqa: E402
from e3rl.integrations.trl.trainer import STATE_FILE  # noqa: E402
from tests.helpers.trl_tiny import grpo_config, tiny_model_and_prompts  # noqa: E402


class Recorder:
    """A reward function that records, per call (= per generation round), what TRL passed."""

    __name__ = "recorder"

    def __init__(self, reward_of):
        self.reward_of = reward_of
        self.calls: list[dict] = []

    def __call__(self, prompts, completions, completion_ids, **kw):
        rewards = [self.reward_of(p, c) for p, c in zip(prompts, completions, strict=True)]
        self.calls.append({"prompts": list(prompts), "rewards": rewards})
        return rewards


def _mixed_reward(prompts_easy, prompts_hard):
    """Easy prompts always right, hard ones always wrong, the rest right on a coin flip of the
    completion's text (so their groups are mixed)."""

    def reward(prompt, completion):
        if prompt in prompts_easy:
            return 1.0
        if prompt in prompts_hard:
            return 0.0
        return float(hash(completion) % 2)

    return reward


class Spy(E3GRPOTrainer):
    """Records each round's allocation and the batch TRL's scoring returned (before shuffling)."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.rounds = getattr(self, "rounds", [])
            rnd = self._e3rl_round
            self.rounds.append(
                {
                    "ids": list(rnd.prompt_ids),
                    "counts": list(rnd.counts),
                    "prompts": [inputs[i * self.num_generations]["prompt"] for i in range(len(rnd.counts))],
                    "advantages": out["advantages"].clone(),
                    "temperature": self.temperature,
                }
            )
        return out


def _trainer(tmp_path, e3rl, cls=Spy, reward=None, **cfg):
    model, tok, prompts, answers = tiny_model_and_prompts()
    ds = Dataset.from_dict({"prompt": prompts, "answer": answers})
    rec = Recorder(reward or _mixed_reward(set(prompts[:2]), set(prompts[2:4])))
    trainer = cls(
        model=model,
        processing_class=tok,
        reward_funcs=[rec],
        train_dataset=ds,
        args=grpo_config(tmp_path, **cfg),
        e3rl=e3rl,
    )
    return trainer, rec, prompts


VALUE = {"budget": {"allocator": "value", "n_min": 0, "n_max": 12, "recheck_prob": 0.0}}


def test_counts_per_prompt_are_the_allocation(tmp_path):
    trainer, rec, prompts = _trainer(tmp_path, VALUE, max_steps=6)
    trainer.train()
    assert len(rec.calls) == len(trainer.rounds) == 6
    moved = False
    for call, rnd in zip(rec.calls, trainer.rounds, strict=True):
        seen = collections.Counter(call["prompts"])
        want = {p: c for p, c in zip(rnd["prompts"], rnd["counts"], strict=True) if c > 0}
        assert dict(seen) == want
        assert sum(rnd["counts"]) == 16  # the generation batch, exactly
        moved |= len(set(rnd["counts"])) > 1
    assert moved, "the value allocator never moved the budget"
    # After a few rounds, a prompt that is always solved gets fewer rollouts than a mixed one.
    last = dict(zip(trainer.rounds[-1]["prompts"], trainer.rounds[-1]["counts"], strict=True))
    easy = [last[p] for p in prompts[:2] if p in last]
    mixed = [last[p] for p in prompts[4:] if p in last]
    if easy and mixed:
        assert max(easy) <= min(mixed)


def test_advantages_are_e3rls_on_the_ragged_groups(tmp_path):
    trainer, rec, _ = _trainer(tmp_path, VALUE, max_steps=4)
    trainer.train()
    for call, rnd in zip(rec.calls, trainer.rounds, strict=True):
        order = {p: i for i, p in enumerate(dict.fromkeys(call["prompts"]))}
        groups = torch.tensor([order[p] for p in call["prompts"]])
        want = group_advantages(torch.tensor(call["rewards"]), groups, mode="grpo")
        torch.testing.assert_close(rnd["advantages"], want)
        for g in set(groups.tolist()):  # a group of one gets 0
            if int((groups == g).sum()) == 1:
                assert float(want[groups == g]) == 0.0
