"""The training loop, top to bottom: sample a batch of prompts, split the rollout budget over them
by difficulty, generate at the controlled temperature, score, compute group advantages, update the
policy, steer the temperature, log, validate, checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e3rl import checkpoint as ckpt
from e3rl.algos import group_advantages
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
from e3rl.guards import (
    BadSteps,
    StopOnSignal,
    check_rewards_scored,
    nan_steps_from_env,
    report_bad_step,
    stop_message,
)
from e3rl.killpoints import kill_point
from e3rl.lora import add_lora, merged, trainable_parameters
from e3rl.models import load_policy, max_positions
from e3rl.optim import implementation_of, make_optimizer, set_implementation
from e3rl.precision import compute_dtype
from e3rl.resume import (
    apply_optim_config,
    check_fresh_start,
    check_resume_config,
    load_checkpoint_adapters,
    load_checkpoint_model,
    read_summary,
    restore,
    stopped_summary,
)
from e3rl.rollout.base import closing_engine
from e3rl.runlock import run_lock
from e3rl.runlog import RunLogger
from e3rl.runtime import make_engine, make_reward, resolve_device
from e3rl.tensors import masked_mean
from e3rl.update import policy_update, reference_logprobs


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _make_scheduler(optimizer, cfg: Config):
    o, total = cfg.optim, max(cfg.trainer.total_steps, 1)

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        progress = min((step - o.warmup_steps) / max(total - o.warmup_steps, 1), 1.0)
        if o.schedule == "cosine":  # float(): a numpy scalar in the scheduler's state would make
            # optim.pt unloadable with weights_only=True (exact for np.float64)
            return float(0.5 * (1 + np.cos(np.pi * progress)))
        if o.schedule == "linear":
            return 1.0 - progress
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# The metrics of E3Control.observe that a step's row logs, in the row's order.
_CONTROL_ROW_KEYS = (
    "reward_mean",
    "accuracy",
    "frac_all_correct",
    "frac_all_wrong",
    "frac_mixed",
    "frac_rollouts_all_correct",
    "frac_rollouts_all_wrong",
    "frac_rollouts_mixed",
    "alloc_min",
    "alloc_mean",
    "alloc_max",
    "alloc_hist",
    "prompts_rolled",
    "prompts_skipped",
    "prompts_forced",
    "prompts_pending",
    "exp_frac_rollouts_mixed",
    "exp_frac_rollouts_mixed_uniform",
)


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
    out["_samples"] = [item["response"] for item in res["items"][: cfg.trainer.log_samples]]
    return out


def train(
    cfg: Config, resume: bool = False, resume_force: bool = False, quiet: bool = False
) -> dict[str, Any]:
    """Runs (or resumes) training as configured; returns the final summary.

    SIGINT/SIGTERM stop it gracefully: the current step finishes, a checkpoint is written, no
    final model, and the summary says `stopped`. `trainer.max_bad_steps` skipped updates in a row
    raise `TrainingError`, with the newest checkpoint from before the problem. The run directory
    is locked for the whole run (`e3rl.runlock`): a second run on it fails at once.
    """
    with run_lock(Path(cfg.trainer.output_dir)) as lock_note:
        return _train(cfg, resume, resume_force, quiet, lock_note)


def _train(
    cfg: Config, resume: bool, resume_force: bool, quiet: bool, lock_note: str | None
) -> dict[str, Any]:
    t_start = time.perf_counter()
    run_dir = Path(cfg.trainer.output_dir)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    _seed_all(cfg.trainer.seed)
    nan_steps = nan_steps_from_env()
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

    # ---- model, data, reward
    device = resolve_device(cfg.trainer.device)
    amp = compute_dtype(cfg.model.dtype)  # weights stay float32; forward passes autocast to amp
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
        if cfg.algo.kl_coef > 0 and not lora.r
        else None
    )

    # ---- the method's controllers
    sampler = torch.Generator().manual_seed(cfg.trainer.seed)
    engine = make_engine(cfg, model, tokenizer, sampler)
    control = make_control(cfg, len(tokenizer))
    control.register([p.id for p in train_set.prompts])
    optimizer = make_optimizer(
        trainable_parameters(model),  # with LoRA only the adapters
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        weight_decay=cfg.optim.weight_decay,
    )
    scheduler = _make_scheduler(optimizer, cfg)
    # The compiled wrapper shares the model's parameters; rollouts, checkpoints and the final
    # model keep using `model` itself (the rollout's shapes change every token: not worth it).
    train_model = torch.compile(model) if cfg.trainer.compile else model
    batches = Batches(
        len(train_set.prompts), cfg.data.batch_size, cfg.trainer.seed, cfg.data.shuffle
    )
    candidates, index_of = cfg.data.candidates_per_step, {}
    selecting = candidates > cfg.data.batch_size  # offer more prompts than are rolled
    if selecting:
        batches, index_of = _prompt_stream(cfg, train_set)
    state: dict[str, Any] = {
        "step": 0,
        "cum_rollouts": 0,
        "cum_tokens": 0,
        "base_val_accuracy": None,
    }

    if latest is not None:
        impl = implementation_of(optimizer)
        restore(latest, optimizer, scheduler, sampler, control, batches, state)
        # load_state_dict takes fused/foreach from the checkpoint: keep what this machine chose.
        set_implementation(optimizer, impl)
        apply_optim_config(optimizer, scheduler, cfg, log)
    if resume:  # rows past the checkpoint (all rows, without one) come again: drop them
        log.truncate(state["step"])
    if latest is not None:
        if state["step"] >= cfg.trainer.total_steps:
            summary = read_summary(run_dir)
            if summary.get("steps") == state["step"]:
                log.info(
                    f"{run_dir} already finished at step {state['step']} "
                    f"(trainer.total_steps={cfg.trainer.total_steps}); nothing to train"
                )
                return summary
            # Killed after the last checkpoint, before the final model and summary were written.
            log.info(f"{run_dir}: step {state['step']} is trained; writing the final model")
            return _finish(run_dir, model, tokenizer, state, log, val_set, t_start, control)
        log.info(f"resumed from {latest} at step {state['step']}")

    saved_at = state["step"] if latest is not None else None  # step of the newest checkpoint

    def save(step: int) -> None:
        nonlocal saved_at
        ckpt.save_checkpoint(
            run_dir,
            step,
            model,
            tokenizer,
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": ckpt.rng_state(sampler),
            },
            {
                "state": state,
                "epoch": batches.epoch,
                "position": batches.position,
                "control": control.state_dict(),
                "config": to_dict(cfg),
            },
            keep=cfg.trainer.keep_checkpoints,
        )
        saved_at = step

    if state["step"] == 0 and val_set is not None:
        state["base_val_accuracy"] = validate(engine, val_set, reward, cfg)["val_accuracy"]
        log.info(
            f"base model: val accuracy {state['base_val_accuracy']:.3f} "
            f"on {len(val_set.prompts)} prompts"
        )

    if getattr(engine, "decode_path", "lean") != "lean":  # the slower path: say why
        log.info(f"rollout decode steps run through {engine.decode_path}")
    total = cfg.trainer.total_steps
    budget = cfg.rollout.n * cfg.data.batch_size
    bad_steps = BadSteps(cfg.trainer.max_bad_steps)
    log.start(total, state["step"])
    with (
        StopOnSignal() as stop,
        contextlib.closing(log),
        contextlib.closing(reward),
        closing_engine(engine),
    ):
        for step in range(state["step"] + 1, total + 1):
            timer = {}
            # ---- 1. prompts and their rollout counts
            t0 = time.perf_counter()
            if selecting:  # the deferred candidates first, then fresh ones
                first = [index_of[p] for p in control.pending()]
                idx = batches.draw(candidates, first, lambda i: train_set.prompts[i].id)
            else:
                idx, _ = batches.next()
            control.set_epoch(batches.epoch)
            prompts = [train_set.prompts[i] for i in idx]
            ids = [p.id for p in prompts]
            plan = control.select(ids, budget) if selecting else control.plan(ids, budget)
            counts, temperature = plan.counts, plan.temperature
            timer["time_plan"] = time.perf_counter() - t0

            # ---- 2. rollouts
            t0 = time.perf_counter()
            r = engine.generate(
                [train_set.token_ids[i] for i in idx],
                counts,
                temperature,
                cfg.rollout.max_new_tokens,
            )
            timer["time_generate"] = time.perf_counter() - t0

            # ---- 3. rewards; the control learns from the raw ones and from the entropy (the
            # next step's temperature), the shaped ones feed the advantages
            t0 = time.perf_counter()
            reward.reset_counts()
            owner = r.prompt_index.tolist()
            raw = reward(
                r.texts, [prompts[i].answer for i in owner], [prompts[i].meta for i in owner]
            )
            check_rewards_scored(reward, len(raw), step, cfg.reward.fn, saved_at, run_dir)
            shaped, method = control.observe(
                [plan.prompt_ids[i] for i in owner],
                raw,
                r.response_lengths.tolist(),
                masked_mean(r.entropy, r.response_mask),
            )
            for notice in control.notices():
                log.info(notice)
            timer["time_reward"] = time.perf_counter() - t0

            # ---- 4. policy update at the sampling temperature (skipped if not finite)
            t0 = time.perf_counter()
            adv = group_advantages(
                torch.tensor(shaped), r.prompt_index, cfg.algo.adv_estimator, cfg.algo.adv_eps
            )
            ref_lp = None
            if cfg.algo.kl_coef > 0:
                ref = ref_model if ref_model is not None else model
                with model.disable_adapter() if ref_model is None else contextlib.nullcontext():
                    ref_lp = reference_logprobs(ref, r, temperature, cfg.algo.micro_batch_size, amp)
            upd = policy_update(
                train_model,
                optimizer,
                r,
                adv,
                temperature,
                cfg.algo,
                cfg.optim.grad_clip,
                ref_lp,
                sampler,
                inject_nan=step in nan_steps,
                autocast_dtype=amp,
            )
            _advance_schedule(scheduler)
            timer["time_update"] = time.perf_counter() - t0

            # ---- 5. metrics, validation, checkpoint
            state["step"] = step
            state["cum_rollouts"] += len(r)
            state["cum_tokens"] += r.num_tokens
            row = {
                "step": step,
                "epoch": batches.epoch,
                "rollouts": len(r),
                "tokens": r.num_tokens,
                "cum_rollouts": state["cum_rollouts"],
                "cum_tokens": state["cum_tokens"],
                **{k: method[k] for k in _CONTROL_ROW_KEYS},
                "alloc_by_level": _mean_count_by_level(counts, prompts),
                "entropy": method["entropy"],
                "entropy_t1": masked_mean(r.entropy_t1, r.response_mask),
                "temperature": method["temperature"],
                "target_entropy": method["target_entropy"],
                "next_temperature": method["next_temperature"],
                "response_length": float(r.response_lengths.float().mean()),
                "truncated_frac": float(r.truncated.float().mean()),
                "reward_errors": reward.errors,
                "reward_timeouts": reward.timeouts,
                "lr": scheduler.get_last_lr()[0],
                **upd,
                **timer,
                **getattr(engine, "last_stats", {}),  # vLLM: its log-probs vs the policy's
            }
            if reward.samples:
                log.info(f"step {step}: reward failures, e.g. {reward.samples[0]}")
            if val_set is not None and (
                step == total or (cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0)
            ):
                v = validate(engine, val_set, reward, cfg)
                kill_point("validation", step)
                for text in v.pop("_samples"):
                    log.sample(step, text)
                row.update(v)
            log.step(row)
            # A bad step is never checkpointed: the newest checkpoint stays from before the
            # problem. The last step is always checkpointed, so --resume can extend the run.
            if bad_steps.record(step, upd["skipped_updates"]):
                report_bad_step(bad_steps, step, saved_at, run_dir, log)
            elif step == total or (cfg.trainer.save_every and step % cfg.trainer.save_every == 0):
                save(step)
            if stop.received and step < total:
                if saved_at != step and not bad_steps.streak:
                    save(step)
                log.info(stop_message(stop.received, step, saved_at))
                return stopped_summary(state, saved_at, run_dir, t_start)

    return _finish(run_dir, model, tokenizer, state, log, val_set, t_start, control)


def _finish(
    run_dir: Path, model, tokenizer, state, log, val_set, t_start: float, control: E3Control
) -> dict[str, Any]:
    """Writes the final model (complete or absent, like a checkpoint), then summary.json, whose
    presence says the run is finished."""
    final_dir = run_dir / "final"
    ckpt.save_model_atomic(final_dir, merged(model), tokenizer)  # LoRA: adapters folded in
    kill_point("final-model", state["step"])
    last = log.last_row or {}
    summary = {
        "steps": state["step"],
        "rollouts": state["cum_rollouts"],
        "tokens": state["cum_tokens"],
        "base_val_accuracy": state["base_val_accuracy"],
        "final_val_accuracy": last.get("val_accuracy"),
        "val_prompts": len(val_set.prompts) if val_set is not None else 0,
        "wall_seconds": time.perf_counter() - t_start,
        "final_dir": str(final_dir),
        **control.summary(),  # share of rollouts in mixed groups vs uniform's expectation
    }
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, run_dir / "summary.json")
    return summary


def _prompt_stream(cfg: Config, train_set: EncodedPrompts) -> tuple[PromptStream, dict[str, int]]:
    """The data order when each step offers ``data.candidates_per_step`` candidates, and the
    index of each prompt id (its first record: the control keeps ids)."""
    ids = [p.id for p in train_set.prompts]
    if len(set(ids)) < cfg.data.candidates_per_step:
        raise DataError(
            f"{cfg.data.train}: {len(set(ids))} distinct training prompts, fewer than "
            f"data.candidates_per_step={cfg.data.candidates_per_step}"
        )
    stream = PromptStream(len(ids), cfg.trainer.seed, cfg.data.shuffle)
    return stream, {pid: i for i, pid in reversed(list(enumerate(ids)))}


def _mean_count_by_level(counts: list[int], prompts) -> dict[str, float]:
    """Mean rollouts per prompt of each difficulty level: where the budget went."""
    by: dict[str, list[int]] = {}
    for c, p in zip(counts, prompts, strict=True):
        if "level" in p.meta:
            by.setdefault(str(p.meta["level"]), []).append(c)
    return {k: sum(v) / len(v) for k, v in sorted(by.items())}


def _advance_schedule(scheduler) -> None:
    """One scheduler step, even when every optimizer step was skipped (non-finite): the schedule
    follows the step count. torch warns about that order; here it is deliberate."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
        scheduler.step()
