"""Score allocation forecasts on a run's logged groups (`trainer.log_groups=true`).

    PYTHONPATH=src .venv/bin/python benchmarks/forecast_replay.py RUN_DIR [RUN_DIR ...] \
        [--out benchmarks/results/testbed/amd-avx2/forecast_replay]

Replays each run's groups step by step. Before a step's outcomes are added, every candidate
forecast gives each planned prompt a Beta(a, b) of its pass rate, hence P(mixed | its rollout
count); per epoch of the training set we compare the forecast share of rollouts in mixed groups
with the measured one, and score the mixed/not-mixed outcome by log-loss. Declared candidates and
the reading: docs/benchmarks.md, "Forecasts replayed on logged groups".
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from e3rl.control.allocation import fit_beta_prior, p_mixed
from e3rl.control.forecast import TransitionForecast
from e3rl.train.runlog import read_metrics

CALIBRATED = 0.03
"""A forecast is calibrated if its mixed-share error is within this every epoch after the first."""


class VisitCounts:
    """Per-prompt counts where each older visit weighs ``keep`` times the next (1: all history,
    0: the last visit only), planned under a flat or a fitted prior."""

    def __init__(self, keep: float, fit: bool) -> None:
        self.keep, self.fit = keep, fit
        self.counts: dict[str, tuple[float, float]] = {}

    def prior(self) -> tuple[float, float]:
        if not self.fit or not self.counts:
            return 1.0, 1.0
        s, f = (np.array(x) for x in zip(*self.counts.values(), strict=True))
        return fit_beta_prior(s, f)

    def forecast(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        a0, b0 = self.prior()
        sf = np.array([self.counts.get(p, (0.0, 0.0)) for p in ids]).reshape(-1, 2)
        return a0 + sf[:, 0], b0 + sf[:, 1]

    def observe(self, ids: list[str], n: list[int], s: list[int]) -> None:
        for p, c, w in zip(ids, n, s, strict=True):
            if c > 0:
                old = self.counts.get(p, (0.0, 0.0))
                self.counts[p] = (self.keep * old[0] + w, self.keep * old[1] + c - w)


class Transition(TransitionForecast):
    """:class:`TransitionForecast` as a replay candidate (its own fallback: `fit-last`)."""

    def forecast(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return super().forecast(ids)


def transition_history() -> Transition:
    """Declared after `transition` was scored: binned by the half-weighted history."""
    return Transition(keep=0.5)


CANDIDATES: dict[str, Callable[[], object]] = {
    "flat": lambda: VisitCounts(1.0, fit=False),
    "fit": lambda: VisitCounts(1.0, fit=True),
    "fit-last": lambda: VisitCounts(0.0, fit=True),
    "fit-visit-0.5": lambda: VisitCounts(0.5, fit=True),
    "transition": lambda: Transition(keep=0.0),
    "transition-history": transition_history,
}


def roc_auc(score: np.ndarray, outcome: np.ndarray) -> float:
    """P(a mixed group's forecast > a non-mixed one's), ties counted half (Mann-Whitney U)."""
    pos, neg = int(outcome.sum()), int(len(outcome) - outcome.sum())
    if pos == 0 or neg == 0:
        return math.nan
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - counts + 1 + ends) / 2  # the mean rank of each tied value
    return float((ranks[inv][outcome == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def replay(rows: list[dict]) -> dict[str, dict[int, dict[str, float]]]:
    """Per candidate and epoch: forecast and measured mixed shares of rollouts, their difference,
    the mean log-loss of each group's mixed outcome, and how well the forecast ranks the groups
    that turn out mixed (ROC AUC)."""
    models = {name: make() for name, make in CANDIDATES.items()}
    acc: dict[str, dict[int, dict[str, float]]] = {
        m: defaultdict(lambda: defaultdict(float)) for m in models
    }
    ranked: dict[str, dict[int, list]] = {m: defaultdict(list) for m in models}
    for row in rows:
        if "groups" not in row:
            raise ValueError(
                f"step {row.get('step')} has no groups: run with trainer.log_groups=true"
            )
        ids = [g[0] for g in row["groups"]]
        n = np.array([g[1] for g in row["groups"]])
        s = np.array([g[2] for g in row["groups"]])
        mixed = ((s > 0) & (s < n)).astype(float)
        for name, model in models.items():
            pm = p_mixed(*model.forecast(ids), n)
            e = acc[name][row["epoch"]]
            e["rollouts"] += n.sum()
            e["forecast"] += (n * pm).sum()
            e["measured"] += (n * mixed).sum()
            rolled = n >= 2
            q = np.clip(pm[rolled], 1e-6, 1 - 1e-6)
            e["logloss"] -= (mixed[rolled] * np.log(q) + (1 - mixed[rolled]) * np.log(1 - q)).sum()
            e["groups"] += rolled.sum()
            ranked[name][row["epoch"]].append((pm[rolled], mixed[rolled]))
        for model in models.values():
            model.observe(ids, n.tolist(), s.tolist())
    out = {}
    for name, epochs in acc.items():
        out[name] = {
            ep: {
                "forecast": float(e["forecast"] / e["rollouts"]),
                "measured": float(e["measured"] / e["rollouts"]),
                "error": float((e["forecast"] - e["measured"]) / e["rollouts"]),
                "logloss": float(e["logloss"] / max(e["groups"], 1)),
                "auc": roc_auc(*(np.concatenate(x) for x in zip(*ranked[name][ep], strict=True))),
            }
            for ep, e in sorted(epochs.items())
        }
    return out


def verdicts(per_run: dict[str, dict]) -> dict[str, dict]:
    """Per candidate: calibrated on every run (|error| <= CALIBRATED in every epoch >= 1), its
    worst error, and its mean log-loss and ROC AUC over runs and epochs >= 1."""
    out = {}
    for name in CANDIDATES:
        errs = [e["error"] for r in per_run.values() for ep, e in r[name].items() if ep >= 1]
        losses = [e["logloss"] for r in per_run.values() for ep, e in r[name].items() if ep >= 1]
        aucs = [e["auc"] for r in per_run.values() for ep, e in r[name].items() if ep >= 1]
        worst = max(errs, key=abs) if errs else math.nan
        out[name] = {
            "calibrated": bool(errs) and bool(abs(worst) <= CALIBRATED),
            "worst_error": worst,
            "mean_logloss": float(np.mean(losses)) if losses else math.nan,
            "mean_auc": float(np.nanmean(aucs)) if aucs else math.nan,
        }
    return out


def markdown(per_run: dict[str, dict], verdict: dict[str, dict]) -> str:
    lines = [
        "# Allocation forecasts replayed on logged groups",
        "",
        "`benchmarks/forecast_replay.py`. Per epoch: forecast share of rollouts in mixed groups minus",
        f"the measured one (log-loss of the mixed outcome per group). Calibrated: within {CALIBRATED}",
        "in every epoch >= 1 on every run. AUC: how well P(mixed) ranks the groups that are mixed.",
        "",
    ]
    for run, res in per_run.items():
        epochs = sorted(next(iter(res.values())))
        lines += [
            f"## {run}",
            "",
            "| forecast | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
        ]
        lines.append("| --- |" + " --- |" * len(epochs))
        m = res[next(iter(res))]
        lines.append(
            "| measured share | " + " | ".join(f"{m[e]['measured']:.3f}" for e in epochs) + " |"
        )
        for name, eps in res.items():
            cells = [f"{eps[e]['error']:+.3f} ({eps[e]['logloss']:.3f})" for e in epochs]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Verdicts",
        "",
        "| forecast | calibrated | worst error | mean log-loss | mean AUC |",
    ]
    lines.append("| --- | --- | --- | --- | --- |")
    for name, v in verdict.items():
        ok = "yes" if v["calibrated"] else "no"
        lines.append(
            f"| {name} | {ok} | {v['worst_error']:+.3f} | {v['mean_logloss']:.3f} | {v['mean_auc']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "runs", nargs="+", type=Path, help="run directories with groups in metrics.jsonl"
    )
    ap.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = ap.parse_args()
    per_run = {str(r): replay(read_metrics(r / "metrics.jsonl")) for r in args.runs}
    verdict = verdicts(per_run)
    text = markdown(per_run, verdict)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(
            json.dumps({"runs": per_run, "verdicts": verdict}, indent=1)
        )
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
