"""Run report: figures (PNG, `e3rl.figures`) and a Markdown summary of one or several runs
(`e3rl report RUN_DIR ... --out DIR`); runs are read by `e3rl.runs.load_run`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from e3rl.figures import DPI, FIGURES, TIME_KEYS, eval_pass_at_k, integer_steps, run_colors
from e3rl.runs import RunData, as_float, load_run

__all__ = ["RunData", "load_run", "make_report"]

# --------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def _fmt_big(value: float | None) -> str:
    if value is None:
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return f"{value:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_cols: int = 1) -> list[str]:
    """A markdown table; the first ``text_cols`` columns are left-aligned, numbers right."""

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join(["---"] * text_cols + ["---:"] * (len(header) - text_cols)) + "|")
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def _mean(run: RunData, key: str) -> float | None:
    ys = run.series(key)[1]
    return float(ys.mean()) if len(ys) else None


def _training_table(runs: Sequence[RunData]) -> list[str]:
    header = [
        "run", "steps", "rollouts", "tokens", "final val acc", "best val acc (step)",
        "final entropy", "final T", "mean all-wrong", "mean all-correct", "s / step",
    ]  # fmt: skip
    rows = []
    for run in runs:
        if not run.metrics:  # an evaluation-only run (e.g. the base model)
            continue
        steps, val = run.series("val_accuracy")
        best = f"{val.max():.3f} ({_fmt(int(steps[val.argmax()]))})" if len(val) else "—"
        per_step = [_mean(run, k) for k, _ in TIME_KEYS]
        total = sum(t for t in per_step if t is not None) if any(per_step) else None
        rows.append([
            run.name,
            _fmt(sum(1 for r in run.metrics if "step" in r)),
            _fmt_big(run.last("cum_rollouts")),
            _fmt_big(run.last("cum_tokens")),
            _fmt(run.last("val_accuracy")),
            best,
            _fmt(run.last("entropy")),
            _fmt(run.last("temperature")),
            _fmt(_mean(run, "frac_all_wrong")),
            _fmt(_mean(run, "frac_all_correct")),
            _fmt(total, 2),
        ])  # fmt: skip
    return _table(header, rows)


def _eval_table(runs: Sequence[RunData]) -> list[str]:
    with_e = [r for r in runs if r.eval]
    if not with_e:
        return []
    ks = sorted({k for r in with_e for k in eval_pass_at_k(r)})
    if len(ks) > 8:  # keep the table narrow: powers of two and the largest k
        ks = sorted({k for k in ks if k & (k - 1) == 0} | {ks[-1]})
    header = ["run", "n", "prompts", "greedy acc", "mean@n", *[f"pass@{k}" for k in ks]]
    header += ["entropy", "distinct answers"]
    rows = []
    for run in with_e:
        ev, curve = run.eval or {}, eval_pass_at_k(run)
        rows.append(
            [run.name, _fmt(ev.get("n")), _fmt(ev.get("num_prompts"))]
            + [_fmt(as_float(ev.get(k))) for k in ("greedy_accuracy", "mean_at_n")]
            + [_fmt(curve.get(k)) for k in ks]
            + [_fmt(as_float(ev.get(k))) for k in ("entropy", "distinct_answers")]
        )
    return _table(header, rows)


def _breakdowns(run: RunData) -> dict[str, dict[str, dict[str, Any]]]:
    """``eval.json``'s ``by_group`` as {key: {group value: {metric: number}}}; odd shapes dropped."""
    by_group = (run.eval or {}).get("by_group")
    if not isinstance(by_group, dict) or not by_group:
        return {}
    if all(_is_metric_row(v) for v in by_group.values()):
        return {"group": by_group}  # a single breakdown without a key level
    return {
        str(key): groups
        for key, groups in by_group.items()
        if isinstance(groups, dict) and groups and all(_is_metric_row(v) for v in groups.values())
    }


def _group_tables(runs: Sequence[RunData]) -> list[str]:
    """One table per breakdown key, runs side by side, so that groups compare across runs."""
    per_run = [(run, _breakdowns(run)) for run in runs]
    keys = list(dict.fromkeys(k for _, b in per_run for k in b))
    lines: list[str] = []
    for key in keys:
        tables = [(run, b[key]) for run, b in per_run if key in b]
        metrics = list(
            dict.fromkeys(m for _, groups in tables for row in groups.values() for m in row)
        )
        rows = [
            [str(group), run.name, *[_fmt(row.get(m)) for m in metrics]]
            for run, groups in tables
            for group, row in groups.items()
        ]
        rows.sort(key=lambda r: (_natural(r[0]), [t[0].name for t in tables].index(r[1])))
        lines += [f"**By {key}**", "", *_table([key, "run", *metrics], rows, text_cols=2), ""]
    return lines


def _natural(text: str) -> tuple:
    """Sort "2" before "10"; non-numbers after numbers, alphabetically."""
    number = as_float(_try_float(text))
    return (0, number, "") if number is not None else (1, 0.0, text)


def _try_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _is_metric_row(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(v, (int, float)) or v is None for v in value.values())
    )


def _unique_names(runs: list[RunData]) -> None:
    """Two runs named alike (``a/seed0``, ``b/seed0``) get their parent folder as a prefix."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    for run in runs:
        if seen[run.name] > 1:
            run.name = f"{run.path.resolve().parent.name}/{run.name}"
    counts: dict[str, int] = {}
    for run in runs:  # still equal (same parent name): number them
        counts[run.name] = counts.get(run.name, 0) + 1
        if counts[run.name] > 1:
            run.name = f"{run.name} ({counts[run.name]})"


_TRAINING_NOTE = (
    "*steps*: logged training steps; *rollouts*, *tokens*: cumulative at the last step; "
    "*mean all-wrong / all-correct*: share of prompt groups, averaged over steps; "
    "*s / step*: mean generate + reward + update time."
)


def make_report(run_dirs: Sequence[Path | str], out_dir: Path | str) -> Path:
    """Write one PNG per figure and ``report.md`` (embedding them) to ``out_dir``.

    Figures whose data no run logged are skipped and the markdown says why. Returns the path of
    ``report.md``.
    """
    if not run_dirs:
        raise ValueError("make_report: no run directories given")
    runs = [load_run(d) for d in run_dirs]
    _unique_names(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = run_colors(runs)

    md = ["# e3rl run report", ""]
    md += [f"- **{r.name}**: `{r.path}`" + _run_note(r) for r in runs]
    md += ["", "## Headline numbers", ""]
    if any(run.metrics for run in runs):
        md += ["### Training", "", *_training_table(runs), "", _TRAINING_NOTE, ""]
    eval_table = _eval_table(runs)
    if eval_table:
        md += ["### Evaluation (`eval.json`)", "", *eval_table, "", *_group_tables(runs)]
    md += ["## Figures", ""]
    skipped = []
    for filename, heading, caption, build in FIGURES:
        path = out_dir / filename
        result = build(runs, colors)
        if isinstance(result, str):
            path.unlink(missing_ok=True)  # never leave a stale figure from an earlier report
            skipped.append(f"- *{heading}* (`{filename}`): skipped, {result}.")
            continue
        integer_steps(result)
        result.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
        md += [f"### {heading}", "", f"![{heading}]({filename})", "", caption, ""]
    if skipped:
        md += ["### Skipped figures", "", *skipped, ""]
    md += _details(runs)
    report = out_dir / "report.md"
    report.write_text("\n".join(md).rstrip() + "\n")
    return report


def _run_note(run: RunData) -> str:
    notes = []
    if not run.metrics:
        notes.append("no training metrics")
    if run.bad_lines:
        notes.append(f"{run.bad_lines} unreadable metrics line(s) skipped (crashed run?)")
    if run.eval is None:
        notes.append("no eval.json")
    return f" ({'; '.join(notes)})" if notes else ""


def _details(runs: Sequence[RunData]) -> list[str]:
    """Config and summary of each run, folded away: for reproducing, not for reading."""
    lines = ["## Run details", ""]
    for run in runs:
        if run.config_text is None and run.summary is None:
            continue
        lines += [f"<details><summary>{run.name}</summary>", ""]
        if run.summary is not None:
            lines += [
                "`summary.json`:",
                "",
                "```json",
                json.dumps(run.summary, indent=2),
                "```",
                "",
            ]
        if run.config_text is not None:
            lines += ["`config.yaml`:", "", "```yaml", run.config_text.rstrip(), "```", ""]
        lines += ["</details>", ""]
    return lines if len(lines) > 2 else []
