"""The tiny model built from scratch (model.path='tiny') and its locally trained tokenizer.

A leaf module (torch, transformers, tokenizers, the config): both the model loader and the warm
start build on it, so neither needs the other.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from e3rl.config import TinyModelConfig

__all__ = ["SPECIAL_TOKENS", "build_tiny_model", "save_tokenizer", "train_tokenizer"]

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


def save_tokenizer(tokenizer, path: str | Path) -> None:
    """`tokenizer.save_pretrained(path)`, loadable by transformers 4.x as well as 5.x.

    transformers 5 records a tokenizer.json tokenizer as class `TokenizersBackend`, a name 4.x
    does not know, so a base or checkpoint written by 5.x would not load where vLLM or verl pin
    4.x. `PreTrainedTokenizerFast` reads the same tokenizer.json in both (the shipped demo base
    names it)."""
    tokenizer.save_pretrained(path)
    config = Path(path) / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if data.get("tokenizer_class") == "TokenizersBackend":
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
            config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")


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
