"""The training loop, top to bottom: sample a batch of prompts, split the rollout budget over them
by difficulty, generate at the controlled temperature, score, compute group advantages, update the
policy, steer the temperature, log, validate, checkpoint.

`train` builds the run (`e3rl.train.run`), resumes it, runs `train_step` for each step, and
finishes; `train_step` is one step of the method.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from e3rl.algos import group_advantages
from e3rl.config import Config
from e3rl.rollout.base import closing_engine
from e3rl.tensors import masked_mean
from e3rl.train import testing
from e3rl.train.guards import StopOnSignal, check_rewards_scored, report_bad_step, stop_message
from e3rl.train.run import Run, build_run, save, validate
from e3rl.train.runlock import run_lock
from e3rl.train.summary import finish, read_summary, summary
from e3rl.train.update import policy_update, reference_logprobs

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
    "rollouts_skipped",
    "prompts_pending",
    "exp_frac_rollouts_mixed",
    "exp_frac_rollouts_mixed_uniform",
)


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
        run = build_run(cfg, resume, resume_force, quiet, lock_note)
        done = start_run(run, resume)
        if done is not None:
            return summary(run, done) if done == "already-finished" else finish(run)
        total = cfg.trainer.total_steps
        with _session(run) as stop:
            for step in range(run.state.step + 1, total + 1):
                train_step(run, step)
                if stop.received and step < total:
                    if run.saved_at != step and not run.bad_steps.streak:
                        save(run, step)
                    run.log.info(stop_message(stop.received, step, run.saved_at))
                    return summary(run, "stopped")
        return finish(run)


def start_run(run: Run, resume: bool) -> str | None:
    """Readies a built run for its first step: None, or "already-finished" / "trained" (every
    step is done; "trained": killed before its final model and summary were written)."""
    state, log, total = run.state, run.log, run.cfg.trainer.total_steps
    if resume:  # rows past the checkpoint (all rows, without one) come again: drop them
        log.truncate(state.step)
    if run.latest is not None:
        if state.step >= total:
            if read_summary(run.run_dir).get("steps") == state.step:
                log.info(
                    f"{run.run_dir} already finished at step {state.step} "
                    f"(trainer.total_steps={total}); nothing to train"
                )
                return "already-finished"
            log.info(f"{run.run_dir}: step {state.step} is trained; writing the final model")
            return "trained"
        log.info(f"resumed from {run.latest} at step {state.step}")
    if state.step == 0 and run.val_set is not None:
        state.base_val_accuracy = validate(run.engine, run.val_set, run.reward, run.cfg)[
            "val_accuracy"
        ]
        log.info(
            f"base model: val accuracy {state.base_val_accuracy:.3f} "
            f"on {len(run.val_set.prompts)} prompts"
        )
    if getattr(run.engine, "decode_path", "lean") != "lean":  # the slower path: say why
        log.info(f"rollout decode steps run through {run.engine.decode_path}")
    log.start(total, state.step)
    return None


@contextlib.contextmanager
def _session(run: Run) -> Iterator[StopOnSignal]:
    """The steps' context: graceful stop on signals; log, reward and engine closed at the end."""
    with (
        StopOnSignal() as stop,
        contextlib.closing(run.log),
        contextlib.closing(run.reward),
        closing_engine(run.engine),
    ):
        yield stop


def train_step(run: Run, step: int) -> dict[str, Any]:
    """One step of the method; logs and returns its metrics row (validated and checkpointed as
    configured)."""
    cfg, state = run.cfg, run.state
    # ---- 1. prompts and their rollout counts
    t0 = time.perf_counter()
    idx, prompts, plan = _plan(run)
    timer = {"time_plan": time.perf_counter() - t0}

    # ---- 2. rollouts
    t0 = time.perf_counter()
    r = run.engine.generate(
        [run.train_set.token_ids[i] for i in idx],
        plan.counts,
        plan.temperature,
        cfg.rollout.max_new_tokens,
    )
    timer["time_generate"] = time.perf_counter() - t0

    # ---- 3. rewards; the control learns from the raw ones and from the entropy (the next
    # step's temperature), the shaped ones feed the advantages
    t0 = time.perf_counter()
    shaped, method, raw = _score(run, step, plan, prompts, r)
    timer["time_reward"] = time.perf_counter() - t0

    # ---- 4. policy update at the sampling temperature (skipped if not finite)
    t0 = time.perf_counter()
    upd = _update(run, step, r, shaped, plan.temperature)
    timer["time_update"] = time.perf_counter() - t0

    # ---- 5. metrics, validation, checkpoint
    state.advance(step, len(r), r.num_tokens)
    row = _row(run, step, r, plan.counts, prompts, method, upd, timer)
    if cfg.trainer.log_groups:
        row["groups"] = _groups(plan, r.prompt_index.tolist(), raw, run.state.control)
    if run.reward.samples:
        run.log.info(f"step {step}: reward failures, e.g. {run.reward.samples[0]}")
    _maybe_validate(run, step, row)
    run.log.step(row)
    _maybe_save(run, step, upd["skipped_updates"])
    return row


def _plan(run: Run) -> tuple[list[int], list, Any]:
    """The step's prompt indices, prompts and their plan (rollout counts, temperature). When selecting, the
    deferred candidates come first, then fresh ones, and the control picks which are rolled."""
    state, control, prompts_all = run.state, run.state.control, run.train_set.prompts
    if run.selecting:
        first = [run.index_of[p] for p in control.pending()]
        idx = state.batches.draw(
            run.cfg.data.candidates_per_step, first, lambda i: prompts_all[i].id
        )
    else:
        idx, _ = state.batches.next()
    control.set_epoch(state.batches.epoch)
    prompts = [prompts_all[i] for i in idx]
    ids = [p.id for p in prompts]
    plan = control.select(ids, run.budget) if run.selecting else control.plan(ids, run.budget)
    return idx, prompts, plan


def _score(run: Run, step: int, plan, prompts, r) -> tuple[list[float], dict[str, Any], list]:
    """(shaped rewards, the control's metrics, raw rewards) of the step's rollouts."""
    reward, control = run.reward, run.state.control
    reward.reset_counts()
    owner = r.prompt_index.tolist()
    raw = reward(r.texts, [prompts[i].answer for i in owner], [prompts[i].meta for i in owner])
    check_rewards_scored(reward, len(raw), step, run.cfg.reward.fn, run.saved_at, run.run_dir)
    shaped, method = control.observe(
        [plan.prompt_ids[i] for i in owner],
        raw,
        r.response_lengths.tolist(),
        masked_mean(r.entropy, r.response_mask),
    )
    for notice in control.notices():
        run.log.info(notice)
    return shaped, method, raw


def _groups(plan, owner: list[int], raw: list[float], control) -> list[list]:
    """[prompt id, rollouts, successes] of every planned prompt (0 rollouts when skipped), with
    success as the tracker counts it: the record an allocator's forecast can be replayed on."""
    rolled = [0] * len(plan.prompt_ids)
    won = [0] * len(plan.prompt_ids)
    for i, x in zip(owner, raw, strict=True):
        rolled[i] += 1
        won[i] += int(x >= control.success_threshold)
    return [[pid, n, w] for pid, n, w in zip(plan.prompt_ids, rolled, won, strict=True)]


def _update(run: Run, step: int, r, shaped: list[float], temperature: float) -> dict[str, float]:
    """The policy update of one step, then one scheduler step."""
    cfg, state = run.cfg, run.state
    adv = group_advantages(
        torch.tensor(shaped), r.prompt_index, cfg.algo.adv_estimator, cfg.algo.adv_eps
    )
    ref_lp = None
    if cfg.algo.kl_coef > 0:
        ref = run.ref_model if run.ref_model is not None else run.model
        no_adapter = run.ref_model is None
        with run.model.disable_adapter() if no_adapter else contextlib.nullcontext():
            ref_lp = reference_logprobs(ref, r, temperature, cfg.algo.micro_batch_size, run.amp)
    with testing.nan_step(step):
        upd = policy_update(
            run.train_model,
            state.optimizer,
            r,
            adv,
            temperature,
            cfg.algo,
            cfg.optim.grad_clip,
            ref_lp,
            state.sampler,
            autocast_dtype=run.amp,
        )
    _advance_schedule(state.scheduler)
    return upd


def _row(run: Run, step: int, r, counts, prompts, method, upd, timer) -> dict[str, Any]:
    state = run.state
    return {
        "step": step,
        "epoch": state.batches.epoch,
        "rollouts": len(r),
        "tokens": r.num_tokens,
        "cum_rollouts": state.cum_rollouts,
        "cum_tokens": state.cum_tokens,
        **{k: method[k] for k in _CONTROL_ROW_KEYS},
        "alloc_by_level": _mean_count_by_level(counts, prompts),
        "entropy": method["entropy"],
        "entropy_t1": masked_mean(r.entropy_t1, r.response_mask),
        "temperature": method["temperature"],
        "target_entropy": method["target_entropy"],
        "next_temperature": method["next_temperature"],
        "response_length": float(r.response_lengths.float().mean()),
        "truncated_frac": float(r.truncated.float().mean()),
        "reward_errors": run.reward.errors,
        "reward_timeouts": run.reward.timeouts,
        "lr": state.scheduler.get_last_lr()[0],
        **upd,
        **timer,
        **getattr(run.engine, "last_stats", {}),  # vLLM: its log-probs vs the policy's
    }


def _maybe_validate(run: Run, step: int, row: dict[str, Any]) -> None:
    t = run.cfg.trainer
    if run.val_set is None or not (
        step == t.total_steps or (t.eval_every and step % t.eval_every == 0)
    ):
        return
    v = validate(run.engine, run.val_set, run.reward, run.cfg)
    testing.kill_point("validation", step)
    for text in v.pop("_samples"):
        run.log.sample(step, text)
    row.update(v)


def _maybe_save(run: Run, step: int, skipped_updates: int) -> None:
    """A bad step is never checkpointed: the newest checkpoint stays from before the problem. The
    last step is always checkpointed, so --resume can extend the run."""
    t = run.cfg.trainer
    if run.bad_steps.record(step, skipped_updates):
        report_bad_step(run.bad_steps, step, run.saved_at, run.run_dir, run.log)
    elif step == t.total_steps or (t.save_every and step % t.save_every == 0):
        save(run, step)


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
