"""Checkpoints: complete or invisible.

A checkpoint is a directory `checkpoints/step-000050/` holding the model (safetensors, loadable
by `AutoModelForCausalLM.from_pretrained`), the tokenizer, `optim.pt` (optimizer, scheduler and
RNG states; loaded with `weights_only=True`) and `state.json` (step, data position, counters,
tracker and controller states). It is written to a temporary directory, fsynced, then renamed,
so a crash mid-write leaves no half checkpoint behind.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e3rl.tiny import save_tokenizer
from e3rl.train.testing import kill_point

CKPT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message names its path and what is wrong."""


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": _to_lists(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if generator is not None:
        state["sampler"] = generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    random.setstate(_to_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if generator is not None and "sampler" in state:
        generator.set_state(state["sampler"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(x: Any) -> Any:
    """`x` with numpy scalars made Python numbers (exact): `torch.load(weights_only=True)` reads
    tensors and plain Python types only, and refuses a checkpoint holding a numpy float."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(plain(v) for v in x)
    return x


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    """Makes a directory's entries (a rename into it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    tokenizer,
    optim_state: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    root = run_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    # A run killed mid-write leaves its temporary directory behind; one run writes here at a time.
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tokenizer, tmp)
        torch.save(plain(optim_state), tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
        _fsync_tree(tmp)
        kill_point("checkpoint-written", step)
        _replace_dir(tmp, final)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_failed(final, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kill_point("checkpoint-renamed", step)
    for old in list_checkpoints(run_dir)[:-keep]:  # renamed first, for the same reason
        doomed = root / f".tmp-prune-{old.name}"
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def _disk_full(error: BaseException) -> bool:
    """ENOSPC however the writer reports it: an OSError, or torch's and safetensors' own errors,
    which carry only the text."""
    for e in (error, error.__cause__, error.__context__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e) if e is not None else ""
        if "No space left" in text or "file write failed" in text or "quota" in text.lower():
            return True
    return False


def _write_failed(final: Path, error: Exception) -> CheckpointError:
    """The error of a checkpoint that could not be written; older checkpoints are untouched."""
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    why = f"{type(error).__name__}: {first}" if first else type(error).__name__
    if _disk_full(error):
        return CheckpointError(
            f"the disk is full: checkpoint {final} could not be written ({why}). Nothing of it "
            f"was kept and older checkpoints are intact; free space on {final.parent}, then "
            "resume with --resume"
        )
    return CheckpointError(
        f"checkpoint {final} could not be written ({why}); nothing of it was kept and older "
        "checkpoints are intact: fix the cause, then resume with --resume"
    )


def _replace_dir(tmp: Path, final: Path) -> None:
    """Renames the complete directory `tmp` to `final`. An existing `final` is moved aside, not
    deleted in place: a kill mid-delete would leave a half directory that looks complete."""
    replaced = None
    if final.exists():
        replaced = final.with_name(f".tmp-old-{final.name}")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def save_model_atomic(path: Path, model, tokenizer) -> None:
    """Model and tokenizer saved to `path` (safetensors) complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".tmp-{path.name}-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tokenizer, tmp)
        _fsync_tree(tmp)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are never listed)."""
    root = run_dir / CKPT_DIR
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / "state.json").is_file()]
    return sorted(done, key=lambda p: p.name)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, optim_state) of a checkpoint directory; CheckpointError names what is corrupt."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            raise ValueError(f"expected a JSON object, got {type(state).__name__}")
    except (OSError, ValueError) as e:
        raise _corrupt(path, "state.json", e) from None
    try:
        optim_state = torch.load(path / "optim.pt", weights_only=True, map_location="cpu")
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise _corrupt(path, "optim.pt", e) from None
    return state, optim_state


def _corrupt(path: Path, name: str, error: Exception) -> CheckpointError:
    why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    why = why.split(". ")[0][:200]  # torch's messages run on for several sentences
    return CheckpointError(
        f"checkpoint {path}: {name} is unreadable or corrupt ({why}); delete this checkpoint "
        "directory to resume from an older one"
    )
