"""A tiny local model, prompts and GRPOConfig for tests of the TRL adapter (no download)."""

from __future__ import annotations

import torch

from e3rl.config import TinyModelConfig
from e3rl.models import build_tiny_model, prepare_tokenizer, train_tokenizer
from e3rl.tasks import arith


def tiny_model_and_prompts(num_prompts: int = 8, seed: int = 0):
    """(model, tokenizer, prompts, answers): a random 2-layer Llama on arithmetic text."""
    problems = arith.splits([1, 2], 80, 0, seed=3)["train"]
    tok = train_tokenizer([p.question + p.solution for p in problems] + ["0123456789"])
    prepare_tokenizer(tok)
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    torch.manual_seed(seed)
    model = build_tiny_model(cfg, tok, seed=seed)
    chosen = problems[:num_prompts]
    return model, tok, [p.question for p in chosen], [str(p.answer) for p in chosen]


def grpo_config(output_dir, **overrides):
    """GRPOConfig for a CPU test: fp32, no checkpointing, logs every step, nothing reported."""
    from trl import GRPOConfig

    base = dict(
        output_dir=str(output_dir),
        max_steps=3,
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=6,
        learning_rate=1e-3,
        beta=0.0,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    base.update(overrides)
    return GRPOConfig(**base)


def train_tiny(output_dir, steps: int = 2) -> tuple[list[str], object, list[str]]:
    """GRPOTrainer, `steps` steps of 4 prompts x 4 (2 steps an epoch of the 8 prompts) on the
    tiny model with a length-parity reward: (the texts its reward function scored, the
    tokenizer, the prompts)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    seen: list[str] = []

    def reward(completions, **_):
        seen.extend(completions)
        return [float(len(c) % 2) for c in completions]

    model, tok, prompts, _ = tiny_model_and_prompts()
    GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=grpo_config(output_dir, max_steps=steps),
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tok,
    ).train()
    return seen, tok, prompts
