"""Run log: `metrics.jsonl` (one row per step, appended and flushed), a progress bar, TensorBoard."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from e3rl.train.testing import armed, kill_point

METRICS_FILE = "metrics.jsonl"


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than producing an unreadable file."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics file; a torn last line (a crash mid-write) is ignored."""
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


class RunLogger:
    def __init__(self, run_dir: Path, quiet: bool = False, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise OSError(
                f"trainer.output_dir {self.run_dir} is not writable: {e.strerror}"
            ) from None
        self.path = self.run_dir / METRICS_FILE
        self.console = Console(stderr=True)
        self.quiet = quiet  # no progress bar; messages are still printed
        self.progress: Progress | None = None
        self.task = None
        self.last_row: dict | None = None
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                self.info("trainer.tensorboard=true but tensorboard is not installed; skipping")

    def info(self, msg: str) -> None:
        self.console.print(f"[dim]e3rl[/dim] {msg}")

    def sample(self, step: int, text: str) -> None:
        self.console.print(f"[dim]step {step} sample:[/dim] {text[:120]!r}")

    def truncate(self, step: int) -> None:
        """Drop rows past `step` (written after the checkpoint we resume from)."""
        rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, self.path)
        self.last_row = rows[-1] if rows else None

    def start(self, total: int, done: int) -> None:
        if self.quiet:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("", total=total, completed=done)

    def step(self, row: dict) -> None:
        row = _clean(row)
        line = json.dumps(row) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            if armed("metrics-line", row["step"]):  # test hook: the torn line of a kill mid-write
                f.write(line[: len(line) // 2])
                f.flush()
                kill_point("metrics-line", row["step"])
            f.write(line)
            f.flush()
        self.last_row = row
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, row["step"])
        if self.progress is not None:
            desc = (
                f"acc {row['accuracy']:.2f}  all-wrong {row['frac_all_wrong']:.2f}  "
                f"H {row['entropy']:.3f}  T {row['temperature']:.2f}"
            )
            if "val_accuracy" in row:
                desc += f"  val {row['val_accuracy']:.3f}"
            self.progress.update(self.task, completed=row["step"], description=desc)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()
