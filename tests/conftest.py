"""Shared fixtures: a tiny model and tokenizer built from a config in seconds, no downloads."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).parent / "helpers"
if str(HELPERS) not in sys.path:  # shared test helpers (tests/helpers), importable at collection
    sys.path.insert(0, str(HELPERS))
DATA_E3 = Path(os.environ.get("E3RL_DATA", REPO.parent / "shared" / "data" / "e3"))

# A tiny model: fast enough for end-to-end tests on 2 cores.
TINY = [
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=2",
    "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64",
    "task.train_size=200",
    "task.val_size=40",
    "task.levels=[1,2,3]",
    "rollout.max_new_tokens=8",
    "data.batch_size=4",
    "rollout.n=4",
    "trainer.eval_every=0",
    "trainer.save_every=0",
    "trainer.threads=1",
]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Warm-start cache in a temporary directory, so tests never depend on a user's cache."""
    os.environ["E3RL_CACHE"] = str(tmp_path_factory.mktemp("e3rl-cache"))
    sys.path.insert(0, str(Path(__file__).parent / "helpers"))
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer, task problems) of a random tiny Llama on the arith task."""
    from e3rl.config import TinyModelConfig
    from e3rl.models import build_tiny_model, prepare_tokenizer, train_tokenizer
    from e3rl.tasks import arith

    problems = arith.splits([1, 2, 3, 4], 200, 20, seed=7)
    tok = train_tokenizer([p.question + p.solution for p in problems["train"]])
    prepare_tokenizer(tok)
    cfg = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    model = build_tiny_model(cfg, tok, seed=0).eval()
    return model, tok, problems
