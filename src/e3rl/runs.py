"""A run directory, read back: `metrics.jsonl` (one JSON object per step) and, when present,
`eval.json`, `summary.json` and `config.yaml`. A torn last line (a crashed run) is tolerated and
a step logged twice (a resumed run) keeps its later record.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunData", "as_float", "load_run"]


@dataclass
class RunData:
    """Everything a report needs from one run directory."""

    name: str
    path: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    eval: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    config_text: str | None = None
    bad_lines: int = 0  # metrics.jsonl lines that could not be parsed (e.g. torn by a crash)

    def series(self, key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` arrays over the steps where both are finite numbers (others are skipped)."""
        xs, ys = [], []
        for row in self.metrics:
            xv, yv = as_float(row.get(x)), as_float(row.get(key))
            if xv is not None and yv is not None:
                xs.append(xv)
                ys.append(yv)
        return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)

    def has(self, key: str) -> bool:
        """Whether any step logged a finite value for ``key``."""
        return len(self.series(key)[1]) > 0

    def last(self, key: str) -> float | None:
        """The value of ``key`` at the last step that logged it."""
        ys = self.series(key)[1]
        return float(ys[-1]) if len(ys) else None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        warnings.warn(f"{path}: not valid JSON ({err}); ignored", stacklevel=3)
        return None
    return data if isinstance(data, dict) else None


def interleaved_at(steps: list[float]) -> int | None:
    """Index of the first step that no single writer could have logged, or None.

    One run logs steps 1, 2, 3, ...; a resumed one may go back to its checkpoint and log the
    steps after it again, one by one. Two runs writing at once jump back and forth instead:
    a jump ahead while steps are being logged again (1, 2, 1, 3), or back again, gives them away.
    """
    high = None  # highest step logged so far
    for i in range(1, len(steps)):
        prev, cur = steps[i - 1], steps[i]
        high = prev if high is None else max(high, prev)
        if prev < high and cur != prev + 1:  # re-logging: must go on one by one
            return i
    return None


def _read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Parse metrics.jsonl, skipping unparseable lines and keeping the last record of each step.

    A crash can tear the last line; a run resumed from a checkpoint then appends after the torn
    fragment and logs again the steps after the checkpoint. The later record of a step is the one
    that belongs to the surviving history, so it wins.
    """
    if not path.is_file():
        return [], 0
    by_step: dict[Any, dict[str, Any]] = {}
    unstepped: list[dict[str, Any]] = []
    bad = 0
    order: list[float] = []  # steps in the order written, to tell a resume from two writers
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(row, dict):
            bad += 1
        elif as_float(row.get("step")) is None:
            unstepped.append(row)
        else:
            order.append(as_float(row["step"]))
            by_step.pop(row["step"], None)  # re-insert so that order follows the last write
            by_step[row["step"]] = row
    at = interleaved_at(order)
    if at is not None:
        raise ValueError(
            f"{path}: the steps are interleaved (record {at + 1} is step {order[at]:g} after "
            f"{', '.join(f'{s:g}' for s in order[max(at - 3, 0) : at])}): two runs wrote this "
            "directory at once, and its metrics mix them; rerun it into a fresh directory"
        )
    rows = sorted(by_step.values(), key=lambda r: r["step"]) + unstepped
    if bad:
        warnings.warn(f"{path}: skipped {bad} unparseable line(s)", stacklevel=3)
    return rows, bad


def load_run(run_dir: Path | str) -> RunData:
    """Read one run directory; the run is named after the directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    metrics_path, eval_path = run_dir / "metrics.jsonl", run_dir / "eval.json"
    if not metrics_path.is_file() and not eval_path.is_file():
        raise FileNotFoundError(f"{run_dir} holds neither metrics.jsonl nor eval.json")
    metrics, bad = _read_metrics(metrics_path)
    config_text, config = None, None
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        import yaml

        config_text = config_path.read_text()
        try:
            loaded = yaml.safe_load(config_text)
            config = loaded if isinstance(loaded, dict) else None
        except yaml.YAMLError as err:
            warnings.warn(f"{config_path}: not valid YAML ({err})", stacklevel=2)
    return RunData(
        name=run_dir.name,
        path=run_dir,
        metrics=metrics,
        eval=_read_json(eval_path),
        summary=_read_json(run_dir / "summary.json"),
        config=config,
        config_text=config_text,
        bad_lines=bad,
    )
