"""Base policy for tiny models: a locally trained tokenizer and a short supervised warm start.

RL needs a base policy that already solves some prompts: a group whose rollouts all fail has no
signal. The warm start trains on the task's worked answers just long enough that easy levels are
mostly solved and hard ones rarely. The result is cached on disk, keyed by everything that shapes
it, so the demo and the tests pay for it once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track

from e3rl.config import ModelConfig, TaskConfig
from e3rl.tasks import TASKS
from e3rl.tiny import build_tiny_model, train_tokenizer

FORMAT_VERSION = 3  # bump when the task format or the warm start changes meaning


def cache_dir() -> Path:
    return Path(os.environ.get("E3RL_CACHE", Path.home() / ".cache" / "e3rl"))


def _key(cfg: ModelConfig, task: TaskConfig, seed: int) -> str:
    blob = json.dumps(
        [
            FORMAT_VERSION,
            dataclasses.asdict(cfg.tiny),
            # the seed is keyed below, as the one actually used
            {k: v for k, v in dataclasses.asdict(cfg.warm_start).items() if k != "seed"},
            dataclasses.asdict(task),
            seed,
        ],
        sort_keys=True,
    )
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def _batch(tokenizer, pairs: list[tuple[str, str]]):
    """Right-padded (input_ids, attention_mask, labels); the loss covers the response only."""
    eos = tokenizer.eos_token_id
    enc = [
        (
            tokenizer(p, add_special_tokens=False)["input_ids"],
            tokenizer(r, add_special_tokens=False)["input_ids"] + [eos],
        )
        for p, r in pairs
    ]
    width = max(len(p) + len(r) for p, r in enc)
    ids = torch.full((len(enc), width), tokenizer.pad_token_id)
    labels = torch.full((len(enc), width), -100)
    attn = torch.zeros((len(enc), width), dtype=torch.long)
    for i, (p, r) in enumerate(enc):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
        attn[i, : len(p) + len(r)] = 1
    return ids, attn, labels


def supervised_warm_start(
    model, tokenizer, examples: Iterator[tuple[str, str]], steps: int, lr: float, batch_size: int
) -> list[float]:
    """Next-token loss on (prompt, response) pairs drawn fresh each step; returns the losses.

    Fresh problems every step (never the same one twice, on purpose): a tiny model fed a fixed
    set memorises it and learns nothing that carries over to held-out prompts.
    """
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.05, 1 - s / max(steps, 1))
    )
    model.train()
    losses = []
    for _ in track(
        range(steps),
        description="warm start (cached after this run)",
        console=Console(stderr=True),
        transient=True,
    ):
        ids, attn, labels = _batch(tokenizer, list(itertools.islice(examples, batch_size)))
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def tiny_base_model(cfg: ModelConfig, task: TaskConfig, seed: int):
    """(model, tokenizer): from the cache if this exact base was built before, else built now."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "base" / f"{task.name}-{_key(cfg, task, seed)}"
    if (target / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(target)
        return AutoModelForCausalLM.from_pretrained(target), tokenizer

    module = TASKS[task.name]
    parts = module.splits(task.levels, task.train_size, task.val_size, task.seed)
    # The tokenizer sees every level's text (and the digits) so no task string falls apart.
    tokenizer = train_tokenizer([p.question + p.solution for p in parts["train"]] + ["0123456789"])
    model = build_tiny_model(cfg.tiny, tokenizer, seed)
    if cfg.warm_start.steps > 0:
        held_out = {p.question for p in parts["val"]}
        pick = random.Random(seed)
        examples = (
            (p.question, p.solution if pick.random() < task.worked_fraction else p.direct)
            for p in module.stream(task.levels, seed + 10_000, exclude=held_out)
        )
        ws = cfg.warm_start
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            supervised_warm_start(model, tokenizer, examples, ws.steps, ws.lr, ws.batch_size)

    # Written beside the target and renamed: a cache entry is complete or absent.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return model, tokenizer
