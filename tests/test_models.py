"""Loading models: package paths, the chat template's end-of-turn token as a stop token, bf16."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from cli import run_cli

from conftest import TINY
from e3rl.config import TinyModelConfig
from e3rl.models import (
    ModelError,
    build_tiny_model,
    load_pretrained,
    prepare_tokenizer,
    resolve_path,
    set_stop_tokens,
    train_tokenizer,
    turn_end_ids,
)
from e3rl.rollout.hf import HFEngine

HELPERS = str(Path(__file__).parent / "helpers")
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_pkg_path_is_a_file_inside_an_installed_package():
    import json as json_pkg

    path = resolve_path("pkg:json/decoder.py")
    assert path == Path(json_pkg.__file__).parent / "decoder.py" and path.is_file()
    assert resolve_path("some/dir") == Path("some/dir")


def test_pkg_path_of_a_missing_package_says_so():
    with pytest.raises(ModelError, match="'no_such_pkg_e3rl' is not installed"):
        resolve_path("pkg:no_such_pkg_e3rl/model.gguf")
    with pytest.raises(ModelError, match="does not exist"):
        load_pretrained("pkg:json/no-such-model.gguf")


def test_the_chat_templates_end_of_turn_token_stops_generation():
    """A chat model whose turn ends with a token other than its EOS must stop there too."""
    tok = train_tokenizer(["1+2=3", "hello"])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    prepare_tokenizer(tok)
    shape = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    model = build_tiny_model(shape, tok)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert turn_end_ids(tok) == []  # no chat template: nothing to learn
    assert im_end not in HFEngine(model, tok).eos_ids

    tok.chat_template = CHATML
    assert turn_end_ids(tok) == [im_end]
    assert set_stop_tokens(model, tok) == [tok.eos_token_id, im_end]
    assert HFEngine(model, tok).eos_ids == sorted([tok.eos_token_id, im_end])
    assert set_stop_tokens(model, tok) == [tok.eos_token_id, im_end]  # idempotent

    # Forced to say <|im_end|> first, every sample stops after one token.
    def say_im_end(module, args, out):
        out.logits[..., im_end] += 1e4

    model.register_forward_hook(say_im_end)
    r = HFEngine(model, tok).generate([tok("1+2=")["input_ids"]], [3], 1.0, 5)
    assert r.response_lengths.tolist() == [1, 1, 1] and not r.truncated.any()


def test_bfloat16_trains_end_to_end_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [HELPERS, os.environ.get("PYTHONPATH")]))
    )
    run = tmp_path / "run"
    res = run_cli(
        "train",
        *TINY,
        "model.dtype=bfloat16",
        "reward.fn=toy_rewards:starts_with_digit",
        "trainer.total_steps=2",
        "trainer.device=cpu",
        "data.val_limit=8",
        f"trainer.output_dir={run}",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["skipped_updates"] == 0 and r["reward_errors"] == 0
        assert all(map(torch.isfinite, torch.tensor([r["loss"], r["grad_norm"], r["entropy"]])))
    # The first PPO pass reproduces the sampling log-probs up to bf16 rounding: hardly any clipping.
    assert max(r["clip_frac"] for r in rows) < 0.05
    # Mixed precision: the weights trained (and saved) are the float32 master weights.
    model, _ = load_pretrained(run / "final")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert json.loads((run / "final" / "config.json").read_text())["dtype"] == "float32"


def test_warm_start_seed_fixes_the_base_model_across_trainer_seeds():
    """model.warm_start.seed overrides trainer.seed for the base only: runs of several seeds can
    share one base model, and leaving it unset keeps the old behaviour (base follows the seed)."""
    from e3rl.config_io import load_config
    from e3rl.models import load_policy

    tiny = [o for o in TINY if o.startswith(("model.", "task."))]
    fixed = load_config(None, [*tiny, "model.warm_start.seed=3"])
    follow = load_config(None, tiny)

    def weights(cfg, seed):
        model, _ = load_policy(cfg.model, cfg.task, seed)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(fixed, 0), weights(fixed, 1))
    assert torch.equal(weights(fixed, 0), weights(follow, 3))
    assert not torch.equal(weights(follow, 0), weights(follow, 1))
