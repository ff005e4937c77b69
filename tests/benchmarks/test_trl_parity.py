"""benchmarks/trl_parity.py's TRL hooks on a tiny GRPOTrainer run (skipped without TRL)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import trl_parity as P  # noqa: E402


def test_trl_arm_with_e3rl_engine_trains_on_the_engines_samples(tmp_path, monkeypatch):
    """`trl-e3rl-engine`: GRPOTrainer's own generation replaced by HFEngine, a prompt's
    generations drawn together, every completion ending where the engine ended it."""
    pytest.importorskip("trl")
    from trl import GRPOTrainer
    from trl_tiny import train_tiny  # tests/helpers

    import e3rl.rollout.hf as H

    calls = []
    generate = H.HFEngine.generate

    def spy(self, prompts, counts, temperature, max_new_tokens):
        r = generate(self, prompts, counts, temperature, max_new_tokens)
        calls.append((counts, r))
        return r

    monkeypatch.setattr(H.HFEngine, "generate", spy)
    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", GRPOTrainer._generate_single_turn)
    P._patch_trl_generation(seed=0)
    seen, _, _ = train_tiny(tmp_path)
    assert len(calls) == 2 and all(c == [4, 4, 4, 4] for c, _ in calls)  # 16 = 4 prompts x 4
    assert seen == [t for _, r in calls for t in r.texts]  # TRL scored what the engine drew


def test_trl_batches_are_recorded_as_trl_trained_on_them(tmp_path, monkeypatch):
    """The replay arms' input: every generation call's prompts (grouped) and completions, which
    decode to exactly the texts TRL's reward function scored."""
    pytest.importorskip("trl")
    from trl import GRPOTrainer
    from trl_tiny import train_tiny  # tests/helpers

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", GRPOTrainer._generate_single_turn)
    batches: list[dict] = []
    P._record_trl_batches(batches)
    seen, tok, prompts = train_tiny(tmp_path)
    assert len(batches) == 2 and all(b["counts"] == [4, 4, 4, 4] for b in batches)
    texts = [tok.decode(c, skip_special_tokens=True) for b in batches for c in b["completions"]]
    assert texts == seen
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    assert all(p in prompt_ids for b in batches for p in b["prompts"])


def test_trl_prompt_order_is_the_order_grpo_trainer_trains_on(tmp_path, monkeypatch):
    """`e3rl-trlorder`'s prompts: step by step, across three epochs of the 8 prompts, the
    dataset indices GRPOTrainer's own sampler handed to its generation."""
    pytest.importorskip("trl")
    from trl import GRPOTrainer
    from trl_tiny import train_tiny  # tests/helpers

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", GRPOTrainer._generate_single_turn)
    batches: list[dict] = []
    P._record_trl_batches(batches)
    _, tok, prompts = train_tiny(tmp_path, steps=6)
    index = {tuple(tok(p)["input_ids"]): i for i, p in enumerate(prompts)}
    assert len(index) == len(prompts)  # distinct prompts: an index names one
    trained = [[index[tuple(p)] for p in b["prompts"]] for b in batches]
    order = P.trl_prompt_order(len(prompts), 6, seed=0, prompts=4, n=4)
    assert trained == order
    assert sorted(order[2] + order[3]) == list(range(8)) and order[2:4] != order[:2]


def test_e3rl_trlorder_batches_follow_trls_order_across_the_epoch_boundary(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    import e3rl.train.run as T
    from e3rl.demo import demo_config

    monkeypatch.setattr(T, "Batches", T.Batches)
    cfg = demo_config(tmp_path, ["model.warm_start.steps=0"])
    P._patch_trl_order(cfg, seed=3, steps=260)
    batches = T.Batches(num_prompts=4000, batch_size=16, seed=3, shuffle=True)
    taken = [batches.next() for _ in range(260)]
    assert [ids for ids, _ in taken] == P.trl_prompt_order(4000, 260, seed=3)
    assert [k for k, (_, new) in enumerate(taken) if new] == [250]  # e3rl's epochs: 250 steps
