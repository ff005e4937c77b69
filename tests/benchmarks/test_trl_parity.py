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
    from trl_tiny import train_two_steps  # tests/helpers

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
    seen, _, _ = train_two_steps(tmp_path)
    assert len(calls) == 2 and all(c == [4, 4, 4, 4] for c, _ in calls)  # 16 = 4 prompts x 4
    assert seen == [t for _, r in calls for t in r.texts]  # TRL scored what the engine drew


def test_trl_batches_are_recorded_as_trl_trained_on_them(tmp_path, monkeypatch):
    """The replay arms' input: every generation call's prompts (grouped) and completions, which
    decode to exactly the texts TRL's reward function scored."""
    pytest.importorskip("trl")
    from trl import GRPOTrainer
    from trl_tiny import train_two_steps  # tests/helpers

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", GRPOTrainer._generate_single_turn)
    batches: list[dict] = []
    P._record_trl_batches(batches)
    seen, tok, prompts = train_two_steps(tmp_path)
    assert len(batches) == 2 and all(b["counts"] == [4, 4, 4, 4] for b in batches)
    texts = [tok.decode(c, skip_special_tokens=True) for b in batches for c in b["completions"]]
    assert texts == seen
    prompt_ids = [tok(p)["input_ids"] for p in prompts]
    assert all(p in prompt_ids for b in batches for p in b["prompts"])
