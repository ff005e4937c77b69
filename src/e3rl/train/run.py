"""A run's parts, built once: `build_run` makes them (restoring the newest checkpoint under
--resume), `start_run` readies the run for its first step, `save` checkpoints it."""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e3rl.config import Config
from e3rl.config_io import dump_yaml, to_dict
from e3rl.control import E3Control
from e3rl.data import (
    Batches,
    DataError,
    EncodedPrompts,
    PromptStream,
    check_fits_positions,
    encode_prompts,
    load_source,
)
from e3rl.evaluate import evaluate
from e3rl.lora import add_lora, trainable_parameters
from e3rl.models import load_policy, max_positions
from e3rl.precision import compute_dtype
from e3rl.runtime import make_engine, make_reward, resolve_device
from e3rl.train import checkpoint as ckpt
from e3rl.train import testing
from e3rl.train.guards import BadSteps
from e3rl.train.optim import implementation_of, make_optimizer, set_implementation
from e3rl.train.resume import (
    apply_optim_config,
    check_fresh_start,
    check_resume_config,
    load_checkpoint_adapters,
    load_checkpoint_model,
    restore,
)
from e3rl.train.runlog import RunLogger
from e3rl.train.state import RunState


@dataclass
class Run:
    """The built parts of one training run; `state` is what its checkpoints save."""

    cfg: Config
    run_dir: Path
    log: RunLogger
    t_start: float
    model: Any
    tokenizer: Any
    train_model: Any  # `model`, or its compiled wrapper (the same parameters)
    ref_model: Any  # the KL reference without LoRA, else None
    engine: Any
    reward: Any
    train_set: EncodedPrompts
    val_set: EncodedPrompts | None
    amp: torch.dtype | None
    state: RunState
    bad_steps: BadSteps
    latest: Path | None = None  # the checkpoint resumed from
    saved_at: int | None = None  # step of the newest checkpoint
    index_of: dict[str, int] | None = None  # prompt id -> index, when selecting

    @property
    def budget(self) -> int:
        return self.cfg.rollout.n * self.cfg.data.batch_size

    @property
    def selecting(self) -> bool:
        """Whether each step offers more prompts (data.candidates_per_step) than are rolled."""
        return self.cfg.data.candidates_per_step > self.cfg.data.batch_size


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_scheduler(optimizer, cfg: Config):
    o, total = cfg.optim, max(cfg.trainer.total_steps, 1)
    # e3rl's first warm-up step moves the policy (its rollouts are not spent on lr 0); the peers'
    # schedules start at 0, and from the same batches only that keeps a run on TRL's trajectory
    # (docs/benchmarks.md "Parity with TRL": the replay arms)
    first = 0 if o.warmup_from_zero else 1

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + first) / o.warmup_steps
        progress = min((step - o.warmup_steps) / max(total - o.warmup_steps, 1), 1.0)
        if o.schedule == "cosine":  # float(): a numpy scalar in the scheduler's state would make
            # optim.pt unloadable with weights_only=True (exact for np.float64)
            return float(0.5 * (1 + np.cos(np.pi * progress)))
        if o.schedule == "linear":
            return 1.0 - progress
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_control(cfg: Config, vocab_size: int) -> E3Control:
    """The method's state for this run: tracker, allocator, temperature controller, length bias."""
    entropy = cfg.rollout.temperature_control == "entropy"
    return E3Control.from_config(
        cfg.budget,
        cfg.reward.length_bias,
        cfg.rollout.n,
        cfg.rollout.temperature,
        vocab_size,
        cfg.trainer.total_steps,
        cfg.trainer.seed,
        cfg.temperature if entropy else None,
    )


def load_data(cfg: Config, tokenizer, log) -> tuple[EncodedPrompts, EncodedPrompts | None]:
    """Training and validation prompts, tokenised; skipped and dropped records reported."""
    out = []
    for name, source in (("training", cfg.data.train), ("validation", cfg.data.val)):
        if source is None:
            out.append(None)
            continue
        prompts = load_source(source, cfg.task)
        limit = cfg.data.val_limit if name == "validation" else cfg.data.train_limit
        if limit:
            prompts = prompts[:limit]
        if getattr(prompts, "skipped", None):
            log.info(f"skipped {len(prompts.skipped)} {name} records, e.g. {prompts.skipped[0]}")
        enc = encode_prompts(
            prompts,
            tokenizer,
            cfg.data.max_prompt_tokens,
            cfg.data.on_too_long,
            cfg.data.system_prompt,
            source=source,
        )
        if enc.dropped:
            log.info(
                f"dropped {enc.dropped} {name} prompts over "
                f"data.max_prompt_tokens={cfg.data.max_prompt_tokens}"
            )
        out.append(enc)
    if len(out[0].prompts) < cfg.data.batch_size:
        raise DataError(
            f"{cfg.data.train}: {len(out[0].prompts)} usable training prompts, fewer than "
            f"data.batch_size={cfg.data.batch_size}; lower data.batch_size or add prompts"
        )
    return out[0], out[1]


def validate(engine, val, reward, cfg: Config) -> dict[str, Any]:
    """Greedy accuracy on the validation prompts (plus pass@k when trainer.eval_n > 0)."""
    n = cfg.trainer.eval_n
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= n]
    res = evaluate(
        engine,
        val.prompts,
        val.token_ids,
        reward,
        cfg.rollout.max_new_tokens,
        n=n,
        temperature=cfg.rollout.temperature,
        ks=ks,
        success_threshold=cfg.budget.success_threshold,
    )
    out = {"val_accuracy": res["greedy_accuracy"]}
    out.update({f"val_pass@{k}": v for k, v in res.get("pass_at_k", {}).items()})
    # per level, so that a curve's shape can be read off the levels that move (docs/benchmarks.md)
    by_level = res["by_group"].get("level", {})
    if len(by_level) > 1:
        key = "pass@1" if n > 0 else "correct"
        out["val_by_level"] = {lv: round(row[key], 4) for lv, row in by_level.items()}
    out["_samples"] = [item["response"] for item in res["items"][: cfg.trainer.log_samples]]
    return out


def _open_log(cfg: Config, resume: bool, resume_force: bool, quiet: bool, lock_note):
    """The run's logger and the checkpoint to resume from (None: a fresh start)."""
    run_dir = Path(cfg.trainer.output_dir)
    if not resume:
        check_fresh_start(run_dir)
    log = RunLogger(run_dir, quiet=quiet, tensorboard=cfg.trainer.tensorboard)
    if lock_note:
        log.info(lock_note)
    found = ckpt.list_checkpoints(run_dir) if resume else []
    latest = found[-1] if found else None
    if resume and latest is None:
        log.info(f"no checkpoint in {run_dir}: starting from scratch")
    if latest is not None:
        check_resume_config(run_dir, cfg, resume_force, log, latest)
    dump_yaml(cfg, run_dir / "config.yaml")
    return log, latest


def _load_model(cfg: Config, latest: Path | None):
    """(model, tokenizer) on the run's device: the checkpoint's, or built as configured."""
    device = resolve_device(cfg.trainer.device)
    lora = cfg.model.lora
    if latest is not None and not lora.r:  # the checkpoint holds the weights and the tokenizer
        model, tokenizer = load_checkpoint_model(latest)
    else:  # with LoRA a checkpoint holds only the adapters: the base is rebuilt as configured
        model, tokenizer = load_policy(cfg.model, cfg.task, cfg.trainer.seed)
        if lora.r:
            model = (
                load_checkpoint_adapters(model, latest, lora) if latest else add_lora(model, lora)
            )
    model.to(device)
    return model, tokenizer


def build_run(
    cfg: Config, resume: bool, resume_force: bool, quiet: bool, lock_note: str | None
) -> Run:
    """Every part of the run, in the order that fixes its random streams; under --resume with a
    checkpoint, its state restored."""
    t_start = time.perf_counter()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    _seed_all(cfg.trainer.seed)
    testing.check_env()
    log, latest = _open_log(cfg, resume, resume_force, quiet, lock_note)
    model, tokenizer = _load_model(cfg, latest)
    train_set, val_set = load_data(cfg, tokenizer, log)
    check_fits_positions(
        [train_set, val_set],
        cfg.rollout.max_new_tokens,
        max_positions(model),
        cfg.data.max_prompt_tokens,
        log,
    )
    reward = make_reward(cfg, cfg.data.train)
    # The KL reference is the initial policy: with LoRA, the same model with its adapters off.
    ref_model = (
        copy.deepcopy(model).eval().requires_grad_(False)
        if cfg.algo.kl_coef > 0 and not cfg.model.lora.r
        else None
    )
    sampler = torch.Generator().manual_seed(cfg.trainer.seed)
    engine = make_engine(cfg, model, tokenizer, sampler)
    state = _fresh_state(cfg, model, len(tokenizer), train_set, sampler)
    run = Run(
        cfg=cfg,
        run_dir=Path(cfg.trainer.output_dir),
        log=log,
        t_start=t_start,
        model=model,
        tokenizer=tokenizer,
        # The compiled wrapper shares the model's parameters; rollouts, checkpoints and the final
        # model keep using `model` itself (the rollout's shapes change every token: not worth it).
        train_model=torch.compile(model) if cfg.trainer.compile else model,
        ref_model=ref_model,
        engine=engine,
        reward=reward,
        train_set=train_set,
        val_set=val_set,
        amp=compute_dtype(cfg.model.dtype),  # weights stay float32; forward passes autocast
        state=state,
        bad_steps=BadSteps(cfg.trainer.max_bad_steps),
        latest=latest,
        index_of=_index_of(cfg, train_set),
    )
    if latest is not None:
        _restore(run)
    return run


def _fresh_state(cfg: Config, model, vocab_size: int, train_set, sampler) -> RunState:
    control = make_control(cfg, vocab_size)
    control.register([p.id for p in train_set.prompts])
    optimizer = make_optimizer(
        trainable_parameters(model),  # with LoRA only the adapters
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        weight_decay=cfg.optim.weight_decay,
    )
    if cfg.data.candidates_per_step > cfg.data.batch_size:  # offer more prompts than are rolled
        batches = PromptStream(len(train_set.prompts), cfg.trainer.seed, cfg.data.shuffle)
    else:
        batches = Batches(
            len(train_set.prompts), cfg.data.batch_size, cfg.trainer.seed, cfg.data.shuffle
        )
    return RunState(
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg),
        sampler=sampler,
        control=control,
        batches=batches,
        config=to_dict(cfg),
    )


def _index_of(cfg: Config, train_set: EncodedPrompts) -> dict[str, int] | None:
    """When selecting, the index of each prompt id (its first record: the control keeps ids)."""
    if cfg.data.candidates_per_step <= cfg.data.batch_size:
        return None
    ids = [p.id for p in train_set.prompts]
    if len(set(ids)) < cfg.data.candidates_per_step:
        raise DataError(
            f"{cfg.data.train}: {len(set(ids))} distinct training prompts, fewer than "
            f"data.candidates_per_step={cfg.data.candidates_per_step}"
        )
    return {pid: i for i, pid in reversed(list(enumerate(ids)))}


def _restore(run: Run) -> None:
    optimizer = run.state.optimizer
    impl = implementation_of(optimizer)
    restore(run.latest, run.state)
    # load_state_dict takes fused/foreach from the checkpoint: keep what this machine chose.
    set_implementation(optimizer, impl)
    apply_optim_config(optimizer, run.state.scheduler, run.cfg, run.log)
    run.saved_at = run.state.step


def save(run: Run, step: int) -> None:
    """Checkpoints the run at `step` (keeping trainer.keep_checkpoints of them)."""
    optim_state, state = run.state.split()
    ckpt.save_checkpoint(
        run.run_dir,
        step,
        run.model,
        run.tokenizer,
        optim_state,
        state,
        keep=run.cfg.trainer.keep_checkpoints,
    )
    run.saved_at = step
