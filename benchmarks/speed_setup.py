"""Shared set-up of the speed benchmarks (trl_speed.py, throughput.py, scaling.py).

One tiny Qwen2 built locally (nothing is downloaded), prompts of the arith task that all have the
same token length (so every trainer does exactly the same work whatever prompts it draws), a dense
reward, the fp32 matmul rate of the machine, and `E3RLStep`: one e3rl training step built from the
library's own pieces (HFEngine, group_advantages, policy_update), as `e3rl.trainer.train` runs it.
"""

from __future__ import annotations

import copy
import platform
import resource
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

import torch

from e3rl.algos import group_advantages
from e3rl.config import AlgoConfig, TaskConfig, TinyModelConfig
from e3rl.data import task_prompts
from e3rl.models import build_tiny_model, prepare_tokenizer, train_tokenizer
from e3rl.optim import make_optimizer
from e3rl.rollout.hf import HFEngine
from e3rl.tensors import masked_mean
from e3rl.update import policy_update

# The SPEC's reference model: hidden 256, 4 layers, vocab 384; heads and MLP width chosen so that
# it has 4.30M parameters (4 heads of 64, intermediate 1024, tied embeddings).
SIZES: dict[str, TinyModelConfig] = {
    name: TinyModelConfig(
        arch="qwen2",
        hidden_size=hidden,
        num_layers=4,
        num_heads=hidden // 64,
        intermediate_size=4 * hidden,
        max_position_embeddings=1024,
    )
    for name, hidden in (("1M", 128), ("4.3M", 256), ("17M", 512))
}
VOCAB = 384
LR = 1e-5
"""Learning rate of both trainers (it does not change the work of a step)."""


def dense_reward(text: str) -> float:
    """Share of digits in a response: a cheap reward that varies inside a group, so that the
    advantages and gradients are not all zero (a random model never solves the task)."""
    return sum(c.isdigit() for c in text) / max(len(text), 1)


@dataclass
class Bench:
    model: torch.nn.Module
    tokenizer: object
    prompts: list[str]
    """Prompt texts, all of `prompt_tokens` tokens."""
    prompt_ids: list[list[int]]
    prompt_tokens: int
    params: int


def build(size: str = "4.3M", num_prompts: int = 256, seed: int = 0) -> Bench:
    """The model of `size` (see SIZES), its tokenizer, and `num_prompts` equal-length prompts."""
    if size not in SIZES:
        raise ValueError(f"model size {size!r} is not known; valid: {', '.join(SIZES)}")
    task = TaskConfig(levels=[1, 2, 3, 4, 5, 6], train_size=3000, val_size=0)
    problems = task_prompts(task, "train")
    corpus = [p.text + p.meta["solution"] for p in problems] + ["0123456789"]
    tok = train_tokenizer(corpus, vocab_size=VOCAB)
    # The arith text saturates at fewer merges than VOCAB: plain filler tokens bring the vocabulary
    # (and so the output layer's cost) to the SPEC's size while every id still decodes.
    tok.add_tokens([f"<x{i}>" for i in range(VOCAB - len(tok))])
    prepare_tokenizer(tok)
    texts = [p.text for p in problems]
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    # Keep the most common prompt length: equal prompts mean equal work in every step.
    length = Counter(len(i) for i in ids).most_common(1)[0][0]
    keep = [(t, i) for t, i in zip(texts, ids, strict=True) if len(i) == length]
    if len(keep) < num_prompts:
        raise ValueError(f"only {len(keep)} prompts of {length} tokens, {num_prompts} asked for")
    keep = keep[:num_prompts]
    model = build_tiny_model(SIZES[size], tok, seed=seed)
    params = sum(p.numel() for p in model.parameters())
    return Bench(model, tok, [t for t, _ in keep], [i for _, i in keep], length, params)


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 30) -> dict:
    """Median fp32 torch.mm rate (GFLOP/s) of two n x n matrices with `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(5):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"n": n, "repeats": repeats, "median_s": med, "gflops": 2 * n**3 / med / 1e9}


def floor_seconds(params: int, generated: int, trained: int, gflops: float) -> float:
    """The issue's compute floor: (2 P gen + 6 P trained) FLOPs at the measured matmul rate."""
    return (2 * params * generated + 6 * params * trained) / (gflops * 1e9)


class PhaseTimer:
    """Wall time of the model's forward passes (split by grad mode) and of optimizer steps,
    from hooks: a step's time is then split without touching the code under test."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None):
        self.totals: dict[str, float] = {}
        self._t0: list[float] = []
        model.register_forward_pre_hook(self._start)
        model.register_forward_hook(self._end_forward)
        if optimizer is not None:
            self.attach_optimizer(optimizer)

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_pre_hook(lambda *a: self._start())
        optimizer.register_step_post_hook(lambda *a: self._end("optimizer"))

    def _start(self, *args) -> None:
        self._t0.append(time.perf_counter())

    def _end(self, name: str) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - self._t0.pop()

    def _end_forward(self, *args) -> None:
        self._end("forward_train" if torch.is_grad_enabled() else "forward_nograd")

    def take(self) -> dict[str, float]:
        out, self.totals = self.totals, {}
        return out


@dataclass
class E3RLStep:
    """One e3rl training step on fixed work: every prompt gets `completions` samples of exactly
    `max_new_tokens` tokens (EOS does not stop a sample), temperature 1, no KL (so no reference
    model), one optimizer step on one micro-batch; old log-probabilities are the sampling ones."""

    bench: Bench
    prompts_per_step: int = 8
    completions: int = 8
    max_new_tokens: int = 16
    seed: int = 0
    micro_batch: int | None = None
    """Sequences per forward/backward in the update (None: the whole step in one)."""
    share_model: bool = False
    """Train `bench.model` itself instead of a copy (saves memory when nothing else uses it)."""
    step_no: int = 0
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.model = self.bench.model if self.share_model else copy.deepcopy(self.bench.model)
        self.engine = HFEngine(
            self.model, self.bench.tokenizer, generator=torch.Generator().manual_seed(self.seed)
        )
        # Forced length: with no stop token, every sample runs to max_new_tokens (as TRL's
        # min_new_tokens does there), so both trainers generate and train the same tokens.
        self.engine.eos_ids = []
        # The trainer's own optimizer (fused AdamW where torch has the kernel).
        self.optimizer = make_optimizer(self.model.parameters(), lr=LR, betas=(0.9, 0.999))
        batch = self.prompts_per_step * self.completions
        self.algo = AlgoConfig(micro_batch_size=self.micro_batch or batch)
        self.timer = PhaseTimer(self.model, self.optimizer)

    def step(self) -> dict:
        n = self.prompts_per_step
        start = (self.step_no * n) % len(self.bench.prompt_ids)
        idx = [(start + i) % len(self.bench.prompt_ids) for i in range(n)]
        t0 = time.perf_counter()
        r = self.engine.generate(
            [self.bench.prompt_ids[i] for i in idx],
            [self.completions] * n,
            1.0,
            self.max_new_tokens,
        )
        t1 = time.perf_counter()
        rewards = torch.tensor([dense_reward(t) for t in r.texts])
        t2 = time.perf_counter()
        adv = group_advantages(rewards, r.prompt_index)
        policy_update(self.model, self.optimizer, r, adv, 1.0, self.algo, grad_clip=1.0)
        masked_mean(r.entropy, r.response_mask)  # the trainer logs it every step
        t3 = time.perf_counter()
        phases = self.timer.take()
        self.step_no += 1
        row = {
            "step_s": t3 - t0,
            "generate_s": t1 - t0,
            "reward_s": t2 - t1,
            "update_s": t3 - t2,
            "generate_forward_s": phases.get("forward_nograd", 0.0),
            "train_forward_s": phases.get("forward_train", 0.0),
            "optimizer_s": phases.get("optimizer", 0.0),
            "generated_tokens": r.num_tokens,
            "trained_tokens": r.num_tokens,
        }
        row["generate_other_s"] = row["generate_s"] - row["generate_forward_s"]
        row["backward_and_rest_s"] = row["update_s"] - row["train_forward_s"] - row["optimizer_s"]
        self.history.append(row)
        return row


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB; ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment(threads: int) -> dict:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def summarize(rows: list[dict], warmup: int) -> dict:
    """Medians over the measured steps (the first `warmup` rows dropped) of every field."""
    kept = rows[warmup:]
    if not kept:
        raise ValueError(f"{len(rows)} steps recorded, none left after {warmup} warm-up steps")
    return {k: statistics.median(r[k] for r in kept) for k in kept[0]}
