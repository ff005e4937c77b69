"""What skipping would save on a run's logged groups: rollouts not spent against mixed groups lost.

    PYTHONPATH=src .venv/bin/python benchmarks/skip_replay.py RUN_DIR [RUN_DIR ...] \
        [--out benchmarks/results/testbed/amd-avx2/skip_replay]

Replays uniform runs' groups (`trainer.log_groups=true`) as `forecast_replay.py` does. Before each
step, a forecast gives each prompt P(mixed | its rollout count); `budget.skip_below=tau` would
give 0 rollouts to those below tau. Over epochs >= 1 (epoch 0 has no history to skip on), per
forecast and tau: the share of rollouts that would not be spent and the share of the mixed groups
(the only ones with a GRPO signal) among them. Optimistic where it matters: a live run learns
nothing about the prompts it skips (re-checks aside), while the replay still sees them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from forecast_replay import CANDIDATES

from e3rl.control.allocation import p_mixed
from e3rl.train.runlog import read_metrics

FORECASTS = ("fit", "fit-visit-0.5", "transition-history")
TAUS = (0.1, 0.2, 0.3, 0.4, 0.5)


def tally(rows: list[dict], forecast: str) -> dict[float, np.ndarray]:
    """Per tau: [rollouts skipped, rollouts, mixed groups skipped, mixed groups], epochs >= 1."""
    model, out = CANDIDATES[forecast](), {t: np.zeros(4) for t in TAUS}
    for row in rows:
        ids = [g[0] for g in row["groups"]]
        n, s = (np.array([g[k] for g in row["groups"]]) for k in (1, 2))
        mixed = (s > 0) & (s < n)
        pm = p_mixed(*model.forecast(ids), n)
        if row["epoch"] >= 1:
            for t in TAUS:
                skip = pm < t
                out[t] += [n[skip].sum(), n.sum(), (mixed & skip).sum(), mixed.sum()]
        model.observe(ids, n.tolist(), s.tolist())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories with logged groups")
    ap.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = ap.parse_args()
    runs = {
        d.name: [r for r in read_metrics(d / "metrics.jsonl") if "groups" in r] for d in args.runs
    }
    table = {}
    for f in FORECASTS:
        per_run = [tally(rows, f) for rows in runs.values()]  # one replay a run and forecast
        totals = {t: sum(r[t] for r in per_run) for t in TAUS}
        table[f] = {
            str(t): {"rollouts_skipped": v[0] / v[1], "mixed_groups_lost": v[2] / v[3]}
            for t, v in totals.items()
        }
    lines = [
        "# Skipping replayed on logged groups",
        "",
        f"`benchmarks/skip_replay.py` over {', '.join(runs)} (epochs >= 1). Per forecast and",
        "threshold: share of rollouts not spent / share of mixed groups among them.",
        "",
        "| forecast | " + " | ".join(f"tau {t}" for t in TAUS) + " |",
        "| --- |" + " --- |" * len(TAUS),
    ]
    for f, row in table.items():
        cells = [
            f"{c['rollouts_skipped']:.3f} / {c['mixed_groups_lost']:.3f}" for c in row.values()
        ]
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.with_suffix(".json").write_text(json.dumps(table, indent=1))
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
