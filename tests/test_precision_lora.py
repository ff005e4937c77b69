"""bf16 mixed precision (float32 master weights) and LoRA adapters through PEFT."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from e3rl.config import AlgoConfig, LoraConfig
from e3rl.config_io import load_config
from e3rl.data import encode_prompts, task_prompts
from e3rl.models import ModelError, load_policy, load_pretrained
from e3rl.rollout.hf import HFEngine
from e3rl.trainer import train
from e3rl.update import policy_update

LR = 1e-5  # small, as RL on pretrained models uses: where bf16 weights lose their updates


def _rollouts(model, tok, problems):
    from e3rl.config import TaskConfig

    task = TaskConfig(levels=[1, 2, 3], train_size=40, val_size=8)
    enc = encode_prompts(task_prompts(task, "val")[:4], tok, 512)
    engine = HFEngine(model, tok, generator=torch.Generator().manual_seed(0))
    r = engine.generate(enc.token_ids, [4] * 4, 1.0, 8)
    adv = torch.linspace(-1, 1, len(r))  # any non-zero advantages: a real gradient
    return r, adv


def _step(model, r, adv, amp=None) -> dict[str, torch.Tensor]:
    """Weight change of one policy update (AdamW, lr LR, no weight decay): name -> delta."""
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    policy_update(model, opt, r, adv, 1.0, AlgoConfig(), 1.0, autocast_dtype=amp)
    return {n: (p.detach().float() - before[n].float()) for n, p in model.named_parameters()}


def _changed(delta: dict[str, torch.Tensor]) -> int:
    return sum(int((d != 0).sum()) for d in delta.values())


def test_bf16_mixed_precision_update_lands_like_float32(tiny):
    model, tok, problems = tiny
    r, adv = _rollouts(model, tok, problems)
    fp32 = _step(copy.deepcopy(model), r, adv)
    mixed_model = copy.deepcopy(model)
    mixed = _step(mixed_model, r, adv, amp=torch.bfloat16)
    pure = _step(copy.deepcopy(model).to(torch.bfloat16), r, adv)  # the old model.dtype=bfloat16

    assert {p.dtype for p in mixed_model.parameters()} == {torch.float32}  # master weights
    n32 = _changed(fp32)
    assert n32 > 0.9 * sum(d.numel() for d in fp32.values())  # (tied lm_head: all get a grad)
    # Mixed precision applies (almost) every update float32 applies, in the same direction...
    assert _changed(mixed) >= 0.99 * n32
    flat32 = torch.cat([d.flatten() for d in fp32.values()])
    flat_mixed = torch.cat([d.flatten() for d in mixed.values()])
    assert torch.nn.functional.cosine_similarity(flat32, flat_mixed, dim=0) > 0.9
    # ...while bf16 weights round most of a 1e-5 step away: the policy hardly moves.
    assert _changed(pure) < 0.2 * n32


def test_lora_trains_only_adapters_and_merges_exactly(tiny):
    pytest.importorskip("peft")
    from e3rl.lora import add_lora, merged

    model, tok, problems = tiny
    base = copy.deepcopy(model)
    peft_model = add_lora(copy.deepcopy(model), LoraConfig(r=4))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert n_train < 0.2 * sum(p.numel() for p in base.parameters())

    r, adv = _rollouts(model, tok, problems)
    delta = _step(peft_model, r, adv, amp=torch.bfloat16)  # LoRA and mixed precision together
    assert all((d != 0).any() for n, d in delta.items() if "lora_B" in n)  # B leaves zero
    assert all(not (d != 0).any() for n, d in delta.items() if n not in trainable)  # base frozen

    ids = r.input_ids[:4]
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        plain = merged(peft_model)
        assert not hasattr(plain, "peft_config")
        got = plain(input_ids=ids).logits
        moved = (got - base(input_ids=ids).logits).abs().max()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert moved > 1e-6  # the merged model is not the base: the update is in it


def test_lora_target_modules_must_exist(tiny):
    pytest.importorskip("peft")
    from e3rl.lora import add_lora

    with pytest.raises(ModelError, match=r"model.lora.target_modules.*\['c_attn'\].*q_proj"):
        add_lora(copy.deepcopy(tiny[0]), LoraConfig(r=4, target_modules=["q_proj", "c_attn"]))


LORA_RUN = [
    *TINY,
    "model.lora.r=4",
    "model.lora.alpha=8",
    "model.dtype=bfloat16",
    "optim.lr=1e-2",
    "data.val=null",
    "trainer.save_every=2",
    "reward.fn=toy_rewards:by_level",  # mixed groups from the start: a random model learns
]


def test_lora_run_checkpoints_adapters_resumes_exactly_and_evaluates(tmp_path):
    pytest.importorskip("peft")
    from e3rl.cli import main

    straight = tmp_path / "straight"
    train(load_config(None, [*LORA_RUN, "trainer.total_steps=4", f"trainer.output_dir={straight}"]))
    # The same run in two parts: 2 steps, then resumed from the step-2 checkpoint (adapters only).
    split = tmp_path / "split"
    first = load_config(None, [*LORA_RUN, "trainer.total_steps=2", f"trainer.output_dir={split}"])
    train(first)
    step2 = split / "checkpoints" / "step-000002"
    assert (step2 / "adapter_model.safetensors").is_file()
    assert not (step2 / "model.safetensors").exists()  # the frozen base is not copied
    cfg = load_config(None, [*LORA_RUN, "trainer.total_steps=4", f"trainer.output_dir={split}"])
    summary = train(cfg, resume=True)
    assert summary["steps"] == 4

    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(split / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert sum(r["grad_norm"] > 0 for r in rows) >= 2  # steps with mixed groups

    # The final model is merged: plain transformers weights, float32, and not the base.
    model, _ = load_pretrained(split / "final")
    assert not any("lora" in k for k in a)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    base, _ = load_policy(cfg.model, cfg.task, cfg.trainer.seed)
    base_sd = base.state_dict()
    assert any(not torch.equal(model.state_dict()[k], base_sd[k]) for k in base_sd)
    out = tmp_path / "eval"
    assert main(["eval", str(split / "final"), "--n", "0", "--limit", "4",
                 "--output-dir", str(out), *TINY]) == 0  # fmt: skip
    assert json.loads((out / "eval.json").read_text())["greedy_accuracy"] >= 0
