"""Resuming a run: checking that the config still matches, restoring every piece of state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from e3rl.config import Config
from e3rl.config_io import diff_keys, to_dict
from e3rl.models import load_pretrained
from e3rl.train import checkpoint as ckpt

if TYPE_CHECKING:
    from e3rl.train.state import RunState

# Keys that may change on resume without changing what the run computes.
RESUME_SAFE_KEYS = (
    "trainer.total_steps",
    "trainer.save_every",
    "trainer.keep_checkpoints",
    "trainer.eval_every",
    "trainer.log_samples",
    "trainer.log_groups",
    "trainer.tensorboard",
    "trainer.output_dir",
    "trainer.max_bad_steps",
)


class ResumeError(RuntimeError):
    """Resuming is impossible or unsafe; the message says why and what to do."""


def check_fresh_start(run_dir: Path) -> None:
    """A run started without --resume must not append to, or overwrite, another run's files."""
    held = [
        name
        for name in ("metrics.jsonl", "summary.json", "checkpoints", "final")
        if (run_dir / name).exists()
        and not ((run_dir / name).is_dir() and not any((run_dir / name).iterdir()))
    ]
    if held:
        raise ResumeError(
            f"trainer.output_dir={run_dir} already holds a run ({', '.join(held)}): continue it "
            "with --resume, or choose another trainer.output_dir (or delete that one)"
        )


def load_checkpoint_model(path: Path):
    """(model, tokenizer) of a checkpoint, float32; a corrupt one is a CheckpointError naming it."""
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        raise ckpt.CheckpointError(
            f"checkpoint {path} holds only LoRA adapters: resume with the model.lora settings "
            "of the run that wrote it (see its config.yaml)"
        )
    try:
        return load_pretrained(path)
    except Exception as e:  # a truncated or garbled file fails in many ways, all meaning "corrupt"
        raise _corrupt_model(path, e) from None


def load_checkpoint_adapters(base, path: Path, lora_cfg):
    """`base` with the LoRA adapters of checkpoint `path`; a corrupt one is a CheckpointError."""
    from e3rl.lora import load_lora

    if not (path / "adapter_config.json").is_file():
        raise ckpt.CheckpointError(
            f"checkpoint {path} holds no LoRA adapters (no adapter_config.json) although "
            f"model.lora.r={lora_cfg.r}; it was written without LoRA: resume with model.lora.r=0"
        )
    try:
        return load_lora(base, path, lora_cfg)
    except Exception as e:
        raise _corrupt_model(path, e) from None


def _corrupt_model(path: Path, e: Exception) -> ckpt.CheckpointError:
    cause = e.__context__ or e  # what load_pretrained wrapped, if it did
    why = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return ckpt.CheckpointError(
        f"checkpoint {path}: the model is unreadable or corrupt ({type(cause).__name__}: "
        f"{why[:200]}); delete this checkpoint directory to resume from an older one"
    )


def restore(path: Path, state: RunState) -> None:
    """Puts the training state saved in checkpoint `path` back into `state`."""
    saved, optim_state = ckpt.load_checkpoint(path)
    try:
        state.load_state_dict({**saved, **optim_state})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise ckpt.CheckpointError(
            f"checkpoint {path} is incomplete or corrupt ({type(e).__name__}: {e}); delete this "
            "checkpoint directory to resume from an older one"
        ) from None


def check_resume_config(
    run_dir: Path, cfg: Config, force: bool, log, checkpoint: Path | None = None
) -> None:
    """Refuses (unless `force`) a resume whose config differs from the run's, beyond the keys
    that cannot change what it computes. The run's config is `config.yaml`; without that file,
    the one every checkpoint holds (said in the log)."""
    path = run_dir / "config.yaml"
    if path.is_file():
        old = _read_run_config(path)
    elif checkpoint is not None:
        old = _checkpoint_config(checkpoint)
        if old is None:
            return
        path = checkpoint / "state.json"
        log.info(f"{run_dir / 'config.yaml'} is missing: checking against the config in {path}")
    else:
        return
    changed = [k for k in diff_keys(old, to_dict(cfg)) if k not in RESUME_SAFE_KEYS]
    if not changed:
        return
    if not force:
        raise ResumeError(
            f"config changed since {path} was written: {', '.join(changed)}; resuming would mix "
            "two runs. Use the same config, a new trainer.output_dir, or --resume-force"
        )
    log.info(f"--resume-force: resuming although {', '.join(changed)} changed")


def _read_run_config(path: Path) -> dict:
    import yaml

    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ResumeError(
            f"{path} is corrupt ({type(e).__name__}); it records the run's config for --resume: "
            "restore it or use a new trainer.output_dir"
        ) from None
    if not isinstance(old, dict):
        raise ResumeError(
            f"{path} is corrupt (not a mapping); it records the run's config for --resume: "
            "restore it or use a new trainer.output_dir"
        )
    return old


def _checkpoint_config(checkpoint: Path) -> dict | None:
    """The config saved in a checkpoint's state.json (None if unreadable: restoring says why)."""
    try:
        saved = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = saved.get("config") if isinstance(saved, dict) else None
    return config if isinstance(config, dict) else None


def apply_optim_config(optimizer, scheduler, cfg: Config, log) -> None:
    """After restoring: optimizer settings changed under --resume-force take effect.

    `load_state_dict` brings back the checkpoint's lr, betas and weight decay, and the
    scheduler's `base_lrs` (its lr before the schedule's factor): left alone, the old lr would
    go on although config.yaml records the new one. The schedule's factor comes from this
    config's schedule, from the first resumed step on. Unchanged settings are left exactly as
    restored.
    """
    o = cfg.optim
    changed = []
    if any(base != o.lr for base in scheduler.base_lrs):
        changed.append(f"optim.lr {scheduler.base_lrs[0]:g} -> {o.lr:g}")
        scheduler.base_lrs = [o.lr] * len(optimizer.param_groups)
        for group in optimizer.param_groups:
            group["initial_lr"] = o.lr
    # The lr of the next step, as LambdaLR computes it (base * factor, bit for bit): differs from
    # the restored one only when the lr or the schedule (optim.schedule, optim.warmup_steps,
    # trainer.total_steps) changed.
    lrs = [
        base * fn(scheduler.last_epoch)
        for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    now = [g["lr"] for g in optimizer.param_groups]
    if lrs != now:
        changed.append(f"the lr of step {scheduler.last_epoch + 1} {now[0]:g} -> {lrs[0]:g}")
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        scheduler._last_lr = list(lrs)
    for key, value in (("betas", tuple(o.betas)), ("weight_decay", o.weight_decay)):
        old = optimizer.param_groups[0].get(key)
        if old is not None and (tuple(old) if key == "betas" else old) != value:
            changed.append(f"optim.{key} {old} -> {value}")
            for group in optimizer.param_groups:
                group[key] = value
    if changed:
        log.info(f"resuming: the optimizer now uses {', '.join(changed)}")
