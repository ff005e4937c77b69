"""The summary a run returns, built in one place for finished, stopped and already-finished runs.

`summary.json` is written only when a run finishes, after its final model: its presence says the
run is finished, and a later --resume of it returns it unchanged.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e3rl.lora import merged
from e3rl.train import checkpoint as ckpt
from e3rl.train.testing import kill_point

if TYPE_CHECKING:
    from e3rl.train.run import Run

SUMMARY_FILE = "summary.json"


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The summary of a finished run ({} if there is none)."""
    path = run_dir / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def summary(run: Run, outcome: str) -> dict[str, Any]:
    """The run's summary; `outcome` is "finished", "stopped" (by a signal: no final model, where
    to resume from) or "already-finished" (the one summary.json holds)."""
    if outcome == "already-finished":
        return read_summary(run.run_dir)
    s = run.state
    counts = {"steps": s.step, "rollouts": s.cum_rollouts, "tokens": s.cum_tokens}
    if outcome == "stopped":
        saved = run.saved_at
        where = run.run_dir / ckpt.CKPT_DIR / f"step-{saved:06d}" if saved is not None else None
        return {
            "stopped": True,
            **counts,
            "checkpoint": str(where) if where is not None else None,
            "wall_seconds": time.perf_counter() - run.t_start,
        }
    if outcome != "finished":
        raise ValueError(f"outcome={outcome!r}: expected finished, stopped or already-finished")
    last = run.log.last_row or {}
    return {
        **counts,
        "base_val_accuracy": s.base_val_accuracy,
        "final_val_accuracy": last.get("val_accuracy"),
        "val_prompts": len(run.val_set.prompts) if run.val_set is not None else 0,
        "wall_seconds": time.perf_counter() - run.t_start,
        "final_dir": str(run.run_dir / "final"),
        **s.control.summary(),  # share of rollouts in mixed groups vs uniform's expectation
    }


def finish(run: Run) -> dict[str, Any]:
    """Writes the final model (complete or absent, like a checkpoint), then summary.json."""
    ckpt.save_model_atomic(run.run_dir / "final", merged(run.model), run.tokenizer)  # LoRA: folded
    kill_point("final-model", run.state.step)
    out = summary(run, "finished")
    tmp = run.run_dir / f"{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(out, indent=2))
    os.replace(tmp, run.run_dir / SUMMARY_FILE)
    return out
