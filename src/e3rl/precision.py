"""Mixed precision: float32 master weights and optimizer state, bfloat16 compute.

`model.dtype: bfloat16` keeps the policy's parameters (and so AdamW's moments) in float32 and
runs the forward passes (rollouts, the update's forward, validation) under
`torch.autocast(dtype=bfloat16)`: matrix products read bf16 copies of the weights, while the
optimizer adds its small updates to float32 weights. Casting the weights themselves to bf16
would lose those updates: a bf16 weight has 8 significant bits, so an AdamW step of lr 1e-5
changes only ~2% of them (benchmarks/memory_dtype.py). See docs/precision_and_lora.md.
"""

from __future__ import annotations

import contextlib

import torch

COMPUTE_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def compute_dtype(name: str) -> torch.dtype | None:
    """The autocast dtype of `model.dtype` (None: plain float32)."""
    return COMPUTE_DTYPES[name]


def autocast(dtype: torch.dtype | None, device: torch.device | str):
    """A context running forward passes in `dtype` (no-op for None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
