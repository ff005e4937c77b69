"""Fixtures for the verl integration tests: a tiny local model and verl-format parquet files.

Nothing here imports verl at module level, so the main venv collects this directory fine; the
verl tests themselves are marked ``slow`` and skip where verl is not importable.
"""

from __future__ import annotations

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '' }}{% endif %}"
)


@pytest.fixture(scope="session")
def verl_model_dir(tmp_path_factory):
    """A random tiny Llama + byte-level tokenizer saved as an HF directory (no download)."""
    from e3rl.config import TinyModelConfig
    from e3rl.models import build_tiny_model, prepare_tokenizer, train_tokenizer
    from e3rl.tasks import arith

    problems = arith.splits([1, 2], 60, 10, seed=3)
    tok = train_tokenizer([p.question + p.solution for p in problems["train"]])
    prepare_tokenizer(tok)
    tok.chat_template = CHAT_TEMPLATE
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    model = build_tiny_model(cfg, tok, seed=0)
    path = tmp_path_factory.mktemp("verl-tiny-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, problems


@pytest.fixture(scope="session")
def verl_parquet(verl_model_dir, tmp_path_factory):
    """train/val parquet files in verl's RL format (prompt messages, reward_model.ground_truth)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, problems = verl_model_dir
    out = tmp_path_factory.mktemp("verl-data")
    paths = {}
    for split in ("train", "val"):
        rows = [
            {
                "data_source": "e3rl/arith",
                "prompt": [{"role": "user", "content": p.question}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
                "extra_info": {"index": i, "split": split},
            }
            for i, p in enumerate(problems[split][:16])
        ]
        paths[split] = out / f"{split}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), paths[split])
    return paths


@pytest.fixture
def verl_config(verl_model_dir, verl_parquet, tmp_path):
    """``compose(overrides)``: the entry point's config for the tiny model and the parquet files."""

    def compose(*overrides: str):
        from hydra import compose as hydra_compose
        from hydra import initialize_config_dir

        from e3rl.integrations.verl.entry import AGENT_LOOPS_FILE

        model_path, _ = verl_model_dir
        base = [
            f"actor_rollout_ref.model.path={model_path}",
            f"data.train_files={verl_parquet['train']}",
            f"data.val_files={verl_parquet['val']}",
            "data.train_batch_size=4",
            "data.max_prompt_length=32",
            "data.max_response_length=8",
            "data.dataloader_num_workers=0",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.n=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            f"actor_rollout_ref.rollout.agent.agent_loop_config_path={AGENT_LOOPS_FILE}",
            f"trainer.default_local_dir={tmp_path / 'ckpt'}",
            "trainer.total_training_steps=3",
        ]
        with initialize_config_dir(
            config_dir=str(AGENT_LOOPS_FILE.parent / "config"), version_base=None
        ):
            return hydra_compose("e3rl_ppo", overrides=base + list(overrides))

    return compose
