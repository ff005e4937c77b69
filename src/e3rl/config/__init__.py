"""Run configuration: one dataclass per section, a one-line docstring per field.

Each section checks its own fields when built; `Config.validate` checks what spans sections.
Reading YAML files and `key=value` overrides into these classes is `e3rl.config_io`'s job. The
method's own sections live in `e3rl.config.method`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from e3rl.config.base import ConfigError, _require
from e3rl.config.method import (
    BudgetConfig,
    LengthBiasConfig,
    TemperatureConfig,
    check_method,
    check_selection,
)
from e3rl.tasks import TASKS

__all__ = [
    "AlgoConfig",
    "BudgetConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "LengthBiasConfig",
    "LoraConfig",
    "ModelConfig",
    "OptimConfig",
    "RewardConfig",
    "RolloutConfig",
    "TaskConfig",
    "TemperatureConfig",
    "TinyModelConfig",
    "TrainerConfig",
    "VLLMConfig",
    "WarmStartConfig",
    "check_method",
    "check_selection",
]


# ----------------------------------------------------------------------------- sections


@dataclass
class TinyModelConfig:
    arch: Literal["llama", "qwen2"] = "llama"
    """Architecture of the tiny model built from scratch when model.path is 'tiny'."""
    hidden_size: int = 128
    """Width of the tiny model."""
    num_layers: int = 4
    """Number of transformer blocks of the tiny model."""
    num_heads: int = 4
    """Attention heads of the tiny model (hidden_size must be divisible by it)."""
    intermediate_size: int = 512
    """MLP width of the tiny model."""
    max_position_embeddings: int = 256
    """Longest sequence (prompt + response) the tiny model accepts."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            _require(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        _require(
            self.hidden_size % self.num_heads == 0,
            "hidden_size",
            self.hidden_size,
            f"a multiple of num_heads={self.num_heads}",
        )


@dataclass
class WarmStartConfig:
    steps: int = 0
    """Supervised steps on the task's worked answers before RL (0 = off). Cached on disk."""
    lr: float = 3e-3
    """Learning rate of the warm start."""
    batch_size: int = 64
    """Examples per warm-start step."""
    seed: int | None = None
    """Seed of the tiny model's init and warm start (None = trainer.seed); fix it to share one base across seeds."""

    def __post_init__(self) -> None:
        _require(self.steps >= 0, "steps", self.steps, "an integer >= 0")
        _require(self.lr > 0, "lr", self.lr, "a float > 0")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraConfig:
    r: int = 0
    """Rank of the LoRA adapters (0 = off: every weight trains). Needs the 'peft' extra."""
    alpha: float = 16.0
    """LoRA scaling numerator: the adapter's update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter's input while training; 0 keeps the first PPO ratio exactly 1."""
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    """Names of the linear layers that get adapters (default: attention and MLP of Llama/Qwen2)."""

    def __post_init__(self) -> None:
        _require(self.r >= 0, "r", self.r, "an integer >= 0 (0 = LoRA off)")
        _require(self.alpha > 0, "alpha", self.alpha, "a number > 0")
        _require(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        _require(
            len(self.target_modules) > 0 and all(m.strip() for m in self.target_modules),
            "target_modules",
            self.target_modules,
            "a non-empty list of module names, e.g. [q_proj, v_proj]",
        )


@dataclass
class ModelConfig:
    path: str = "tiny"
    """'tiny' (build from model.tiny with a locally trained tokenizer), a HF directory, or a .gguf file."""
    gguf_file: str | None = None
    """GGUF file name inside model.path when model.path is a directory."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype. bfloat16 = mixed precision: float32 weights and AdamW state, forward passes under bfloat16 autocast."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model."""
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    """Supervised warm start of the base policy on a built-in task's worked answers."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapters through PEFT: only the adapters train, checkpoints hold only them."""


@dataclass
class TaskConfig:
    name: Literal["arith", "countdown", "addition"] = "arith"
    """Built-in task used by data sources of the form 'arith:train' / 'countdown:val'."""
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6])
    """Difficulty levels to generate (see e3rl.tasks.arith, .countdown, .addition for each level)."""
    worked_fraction: float = 0.5
    """Share of multi-step warm-start examples that show the worked steps (the rest answer directly)."""
    worked_prior: float | None = None
    """Share of worked answers among the first response tokens the warm start trains on (the base's prior for working a problem out); None = worked_fraction. Below worked_fraction, the base learns to execute worked answers from many examples but seldom opens one: its first token's loss is dropped on some worked examples."""
    train_size: int = 3000
    """Training prompts generated (spread evenly over the levels)."""
    val_size: int = 300
    """Held-out prompts generated, disjoint from the training prompts."""
    seed: int = 1234
    """Seed of the task generator: the same seed gives the same splits."""

    def __post_init__(self) -> None:
        _require(len(self.levels) > 0, "levels", self.levels, "a non-empty list of levels")
        valid = sorted(TASKS[self.name].LEVELS)
        _require(
            set(self.levels) <= set(valid),
            "levels",
            self.levels,
            f"levels of task {self.name!r}, a subset of {valid}",
        )
        _require(self.train_size >= 1, "train_size", self.train_size, "an integer >= 1")
        _require(self.val_size >= 0, "val_size", self.val_size, "an integer >= 0")
        _require(
            0 <= self.worked_fraction <= 1, "worked_fraction", self.worked_fraction, "in [0, 1]"
        )
        if self.worked_prior is not None:
            _require(
                0 <= self.worked_prior <= self.worked_fraction,
                "worked_prior",
                self.worked_prior,
                f"None or in [0, worked_fraction = {self.worked_fraction}]",
            )


@dataclass
class DataConfig:
    train: str = "arith:train"
    """Training prompts: a .jsonl/.json/.parquet file (verl format included) or 'TASK:train'."""
    val: str | None = "arith:val"
    """Validation prompts (same forms as data.train), or null for none."""
    batch_size: int = 16
    """Prompts per training step."""
    max_prompt_tokens: int = 512
    """Prompts longer than this (after the chat template) are dropped or rejected."""
    on_too_long: Literal["drop", "error"] = "drop"
    """What to do with a prompt over data.max_prompt_tokens: drop it (counted) or stop."""
    train_limit: int = 0
    """Use only the first this many training prompts (0 = all): a smaller set comes back more often."""
    val_limit: int = 0
    """Use at most this many validation prompts (0 = all)."""
    shuffle: bool = True
    """Shuffle training prompts each epoch (seeded by trainer.seed)."""
    system_prompt: str | None = None
    """System message prepended to every chat prompt that has none."""
    candidates_per_step: int = 0
    """Prompts offered per step (0 = data.batch_size); the budget n x batch_size goes to the best of them, the rest wait (budget.max_deferrals)."""

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _require(self.max_prompt_tokens >= 1, "max_prompt_tokens", self.max_prompt_tokens, ">= 1")
        _require(self.train_limit >= 0, "train_limit", self.train_limit, "an integer >= 0")
        _require(self.val_limit >= 0, "val_limit", self.val_limit, "an integer >= 0")
        _require(
            self.candidates_per_step == 0 or self.candidates_per_step >= self.batch_size,
            "candidates_per_step",
            self.candidates_per_step,
            f"0 (= data.batch_size) or an integer >= data.batch_size={self.batch_size}",
        )


@dataclass
class VLLMConfig:
    gpu_memory_utilization: float = 0.5
    """Share of GPU memory (CPU build: of RAM) vLLM may take for weights and KV cache."""
    kv_cache_gb: float = 0.0
    """KV cache size in GiB (0 = what gpu_memory_utilization leaves); on CPU a small value starts faster."""
    enforce_eager: bool = True
    """No CUDA graphs / torch.compile: quicker start; false decodes faster on a GPU."""
    sleep: bool = True
    """On a GPU, sleep between rollouts (weights offloaded, KV cache freed) so the update has the memory."""
    logprobs: Literal["engine", "trainer"] = "engine"
    """Old log-probs for the PPO ratio: vLLM's, or the policy's own from the entropy pass (verl's choice)."""

    def __post_init__(self) -> None:
        _require(
            0 < self.gpu_memory_utilization <= 1,
            "gpu_memory_utilization",
            self.gpu_memory_utilization,
            "a float in (0, 1]",
        )
        _require(self.kv_cache_gb >= 0, "kv_cache_gb", self.kv_cache_gb, "a float >= 0 (GiB)")


@dataclass
class RolloutConfig:
    n: int = 8
    """Rollouts per prompt on average; the step's budget is n * data.batch_size."""
    max_new_tokens: int = 32
    """Longest response sampled."""
    temperature: float = 1.0
    """Sampling temperature (the initial one when temperature control is on)."""
    temperature_control: Literal["none", "entropy"] = "none"
    """'entropy' steers the temperature each step to keep the policy entropy at a target."""
    micro_batch_size: int = 256
    """Sequences generated at once (bounds memory)."""
    lean_decode: bool = True
    """hf engine: decode Llama/Qwen2 models with fused weights (same logits, faster on CPU)."""
    engine: Literal["hf", "vllm"] = "hf"
    """Rollout engine: 'hf' (transformers, CPU or GPU) or 'vllm' (extra `vllm`; docs/vllm.md)."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """Settings of the vLLM engine (used when rollout.engine=vllm)."""

    def __post_init__(self) -> None:
        _require(self.n >= 1, "n", self.n, "an integer >= 1")
        _require(self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, ">= 1")
        _require(
            math.isfinite(self.temperature) and self.temperature > 0,
            "temperature",
            self.temperature,
            "a finite float > 0",
        )
        _require(self.micro_batch_size >= 1, "micro_batch_size", self.micro_batch_size, ">= 1")


@dataclass
class AlgoConfig:
    adv_estimator: Literal["grpo", "drgrpo", "rloo"] = "grpo"
    """Advantage on groups: grpo (mean/std), drgrpo (mean only), rloo (leave-one-out)."""
    adv_eps: float = 1e-6
    """Added to the group std in grpo."""
    clip_low: float = 0.2
    """PPO ratio clip below 1 (ratio >= 1 - clip_low)."""
    clip_high: float = 0.2
    """PPO ratio clip above 1 (ratio <= 1 + clip_high); > clip_low is DAPO's clip-higher."""
    dual_clip: float | None = None
    """Dual-clip constant c > 1 bounding the loss of negative advantages (null = off)."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """How per-token losses are aggregated."""
    kl_coef: float = 0.0
    """KL penalty to the reference (initial) policy; 0 loads no reference model."""
    kl_estimator: Literal["k1", "k3"] = "k3"
    """KL estimator: k1 (log-ratio) or k3 (low-variance, always >= 0)."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (the paper's '+ER' baseline)."""
    ppo_epochs: int = 1
    """Passes over each step's rollouts."""
    minibatches: int = 1
    """Optimizer steps per pass (the rollouts are split into this many minibatches)."""
    micro_batch_size: int = 64
    """Sequences per forward/backward (gradient accumulation inside a minibatch)."""

    def __post_init__(self) -> None:
        _require(self.adv_eps >= 0, "adv_eps", self.adv_eps, "a float >= 0")
        _require(0 <= self.clip_low < 1, "clip_low", self.clip_low, "a float in [0, 1)")
        _require(self.clip_high >= 0, "clip_high", self.clip_high, "a float >= 0")
        _require(
            self.dual_clip is None or self.dual_clip > 1, "dual_clip", self.dual_clip, "null or > 1"
        )
        _require(self.kl_coef >= 0, "kl_coef", self.kl_coef, "a float >= 0")
        _require(self.ppo_epochs >= 1, "ppo_epochs", self.ppo_epochs, "an integer >= 1")
        _require(self.minibatches >= 1, "minibatches", self.minibatches, "an integer >= 1")
        _require(self.micro_batch_size >= 1, "micro_batch_size", self.micro_batch_size, ">= 1")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps (the first at lr / warmup_steps: every step moves)."""
    warmup_from_zero: bool = False
    """Warm up from lr 0 at the first step, as transformers, TRL and verl schedule it."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate decay after warm-up, over trainer.total_steps."""

    def __post_init__(self) -> None:
        _require(self.lr > 0, "lr", self.lr, "a float > 0")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a float >= 0")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            self.betas,
            "two floats in [0, 1)",
        )
        _require(self.grad_clip >= 0, "grad_clip", self.grad_clip, "a float >= 0")
        _require(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer >= 0")


@dataclass
class RewardConfig:
    fn: str = "auto"
    """'auto' (the task's checker, else math), 'math' (math-verify), 'exact', 'numeric', or 'module:function'."""
    timeout: float = 5.0
    """Seconds a single reward call may take before it scores 0 and is counted."""
    length_bias: LengthBiasConfig = field(default_factory=LengthBiasConfig)
    """Length bias for easy prompts (from the authors' code)."""

    def __post_init__(self) -> None:
        _require(self.timeout > 0, "timeout", self.timeout, "a float > 0 (seconds)")


@dataclass
class TrainerConfig:
    total_steps: int = 100
    """Training steps (one step = one batch of prompts, rollouts, one or more updates)."""
    output_dir: str = "runs/default"
    """Run directory: config, metrics.jsonl, checkpoints, final model."""
    save_every: int = 50
    """Write a checkpoint every this many steps (0 = only the final model)."""
    keep_checkpoints: int = 2
    """Keep this many most recent checkpoints."""
    seed: int = 0
    """Seed for model init, data order and sampling."""
    eval_every: int = 25
    """Greedy validation accuracy every this many steps (0 = only before and after)."""
    eval_n: int = 0
    """Also sample this many responses per validation prompt for pass@k (0 = greedy only)."""
    threads: int = 0
    """torch CPU threads (0 = torch's default)."""
    compile: bool = False
    """torch.compile the policy for its updates: ~30 s once, then 10-25 % faster updates on CPU."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard extra)."""
    log_samples: int = 1
    """Print this many sampled responses at each validation."""
    log_groups: bool = False
    """Also write each step's groups to metrics.jsonl (`groups`: [prompt id, rollouts, successes] per prompt)."""
    max_bad_steps: int = 3
    """Stop the run after this many steps in a row whose update was skipped (non-finite loss or gradient)."""

    def __post_init__(self) -> None:
        _require(self.total_steps >= 0, "total_steps", self.total_steps, "an integer >= 0")
        # Empty would write the whole run into the current directory.
        _require(bool(self.output_dir.strip()), "output_dir", self.output_dir, "a directory path")
        _require(self.save_every >= 0, "save_every", self.save_every, "an integer >= 0")
        _require(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, ">= 1")
        _require(self.eval_every >= 0, "eval_every", self.eval_every, "an integer >= 0")
        _require(self.eval_n >= 0, "eval_n", self.eval_n, "an integer >= 0")
        _require(self.threads >= 0, "threads", self.threads, "an integer >= 0")
        _require(self.max_bad_steps >= 1, "max_bad_steps", self.max_bad_steps, "an integer >= 1")
        _require(
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
            "device",
            self.device,
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
        )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """Built-in task generator (used by 'TASK:split' data sources and warm start)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Prompt sources and batching."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """Sampling."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    """Advantages and policy loss."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Reward function."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Difficulty-aware rollout allocation."""
    temperature: TemperatureConfig = field(default_factory=TemperatureConfig)
    """Entropy-targeting temperature controller (rollout.temperature_control=entropy)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """The loop, logging and checkpoints."""

    def validate(self) -> Config:
        """Checks that span sections (each section checks its own fields on construction)."""
        check_method(
            self.budget,
            self.rollout.n,
            self.rollout.temperature_control,
            self.temperature,
            n_key="rollout.n",
            prefix="",
            control_key="rollout.temperature_control",
        )
        check_selection(
            self.budget.allocator,
            self.data.candidates_per_step,
            self.data.batch_size,
            self.rollout.n,
            self.budget.n_min,
        )
        if self.budget.skip_below > 0 and self.data.candidates_per_step > self.data.batch_size:
            raise ConfigError(
                f"budget.skip_below={self.budget.skip_below} is invalid with "
                f"data.candidates_per_step={self.data.candidates_per_step} > data.batch_size: "
                "selection already chooses which candidates are rolled; expected skip_below=0"
            )
        return self
