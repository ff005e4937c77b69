"""LoRA adapters through PEFT (`model.lora.r > 0`).

Only the adapters train: the optimizer sees only them, and a checkpoint holds only them (PEFT's
`adapter_model.safetensors` and `adapter_config.json`), beside the tokenizer; resuming rebuilds
the base model as configured and loads the adapters onto it. The final model is saved merged
(base + adapter update folded into the weights): an ordinary model directory that `e3rl eval`
and transformers load without PEFT.
"""

from __future__ import annotations

from pathlib import Path

import torch

from e3rl.config import LoraConfig
from e3rl.models import ModelError


def _peft(cfg: LoraConfig):
    try:
        import peft
    except ImportError:
        raise ModelError(
            f"model.lora.r={cfg.r} needs the 'peft' package: pip install 'e3rl[peft]'"
        ) from None
    return peft


def is_lora(model: torch.nn.Module) -> bool:
    return getattr(model, "peft_config", None) is not None


def _check_targets(model: torch.nn.Module, cfg: LoraConfig) -> None:
    """Every configured target names at least one linear layer (PEFT only checks for any)."""
    linear = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    missing = [t for t in cfg.target_modules if t not in linear]
    if missing:
        raise ModelError(
            f"model.lora.target_modules={cfg.target_modules}: {missing} match no linear layer of "
            f"this model; its linear layers are {sorted(linear)}"
        )


def add_lora(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    """`model` with fresh LoRA adapters (B = 0: the policy is unchanged until the first update);
    the base weights are frozen."""
    peft = _peft(cfg)
    _check_targets(model, cfg)
    config = peft.LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def load_lora(model: torch.nn.Module, path: Path, cfg: LoraConfig) -> torch.nn.Module:
    """`model` (the base) with the trainable adapters saved in checkpoint `path`."""
    peft = _peft(cfg)
    return peft.PeftModel.from_pretrained(model, path, is_trainable=True)


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with the adapters folded into its weights (changes `model` in place)."""
    return model.merge_and_unload() if is_lora(model) else model


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
