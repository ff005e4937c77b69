"""What benchmarks/trl_parity.py writes for people: summary.md and the statistics behind it.

Pure functions of the records (`--out/<arm>/seed<k>.json`); no torch, no TRL.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _load(out: Path) -> dict[str, dict[int, dict]]:
    runs: dict[str, dict[int, dict]] = {}
    for f in sorted(out.glob("*/seed*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(r["arm"], {})[r["seed"]] = r
    return runs


def paired_bootstrap(
    a: list[list[bool]], b: list[list[bool]], draws: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over seeds of acc(a) - acc(b), with a 95 % interval from resampling prompts (the
    same resample for every seed: prompts are shared, seeds are paired)."""
    import numpy as np

    da = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)  # [seeds, prompts]
    point = float(da.mean())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, da.shape[1], size=(draws, da.shape[1]))
    boot = da[:, idx].mean(axis=(0, 2))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


def response_form(text: str) -> str:
    """How a greedy response is written: 'direct' (`#15`, as the warm start answers level 1),
    'worked' (steps before the `#`), 'no answer' (no `#` number) or 'other'."""
    import re

    t = text.strip()
    if re.fullmatch(r"#\s*-?\d+", t):
        return "direct"
    if re.search(r"#\s*-?\d+", t) is None:
        return "no answer"
    return "worked" if "=" in t.split("#")[0] else "other"


def seed_level_difference(a: list[float], b: list[float]) -> str:
    """Mean of a - b over runs with a t interval from the run-to-run spread (pooled variance):
    what the prompt bootstrap leaves out is that a whole run is up or down by chance."""
    d = statistics.fmean(a) - statistics.fmean(b)
    if len(a) + len(b) < 3 or (len(a) < 2 and len(b) < 2):
        return f"{d:+.3f} (too few runs for a run-level interval)"
    ss = sum((x - statistics.fmean(a)) ** 2 for x in a) + sum(
        (x - statistics.fmean(b)) ** 2 for x in b
    )
    dof = len(a) + len(b) - 2
    se = (ss / dof * (1 / len(a) + 1 / len(b))) ** 0.5
    half = t975(dof) * se
    return f"{d:+.3f} ± {half:.3f} (95 % t, {dof} dof, run-to-run sd {(ss / dof) ** 0.5:.3f})"


# The swap arms as a 2 x 2 design: (trainer, generation path) of each arm
FACTORIAL = {
    "trl": ("TRL", "generate"),
    "trl-e3rl-engine": ("TRL", "e3rl engine"),
    "e3rl-generate": ("e3rl", "generate"),
    "e3rl": ("e3rl", "e3rl engine"),
}


def factorial_effects(cells: dict[tuple[str, str], list[float]]) -> dict[str, tuple[float, float]]:
    """Main effects of a 2 x 2 design of runs, each (mean, 95 % t half-width): the trainer's
    (TRL minus e3rl, averaged over the two generation paths), the generation path's (generate
    minus e3rl's engine, averaged over the trainers) and their interaction; the variance is
    pooled over the four cells, so unequal cell sizes are weighted correctly."""
    import statistics

    keys = [
        ("TRL", "generate"),
        ("TRL", "e3rl engine"),
        ("e3rl", "generate"),
        ("e3rl", "e3rl engine"),
    ]
    m = {k: statistics.fmean(cells[k]) for k in keys}
    ss = sum((x - m[k]) ** 2 for k in keys for x in cells[k])
    dof = sum(len(cells[k]) for k in keys) - 4
    # each effect is a contrast sum(c_k * mean_k) with |c_k| = 1/2 (interaction: 1)
    half = t975(dof) * (ss / dof * sum(0.25 / len(cells[k]) for k in keys)) ** 0.5
    tg, te, eg, ee = (m[k] for k in keys)
    return {
        "trainer": ((tg + te - eg - ee) / 2, half),
        "generation": ((tg + eg - te - ee) / 2, half),
        "interaction": ((tg - te) - (eg - ee), 2 * half),
    }


# Student's t, 97.5 % quantile, for 1..30 degrees of freedom (no scipy in the bench venv)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


# one-sided 95 % t quantiles: 1..30 degrees of freedom, then 40, 60, 120 (a dof between two
# rows takes the smaller one's, which is the larger quantile: conservative)
_T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782,
        1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711,
        1.708, 1.706, 1.703, 1.701, 1.699, 1.697)  # fmt: skip
_T95_TAIL = ((120, 1.658), (60, 1.671), (40, 1.684))
NONINFERIORITY_MARGIN = 0.01
"""One point of greedy accuracy: the margin the testbed suite declared for pass@64."""


def t95(dof: float) -> float:
    """The one-sided 95 % t quantile at floor(dof) degrees of freedom (conservative between
    tabulated values)."""
    if dof < 1:
        raise ValueError(f"a t bound needs at least 1 degree of freedom, not {dof}")
    for at, value in _T95_TAIL:
        if dof >= at:
            return value
    return _T95[min(int(dof), 30) - 1]


def non_inferiority(
    peer: list[float], ours: list[float], margin: float = NONINFERIORITY_MARGIN
) -> dict:
    """Does `ours` learn at least as much as `peer`, to within `margin`? (docs/benchmarks.md,
    "read for non-inferiority"). Welch t over runs on peer - ours: "at least as much" if the
    one-sided 95 % upper bound is below the margin, "less" if the two-sided 95 % interval
    excludes 0 in the peer's favour, otherwise "undecided"."""
    if len(peer) < 2 or len(ours) < 2:
        raise ValueError("non-inferiority needs at least 2 runs a side")
    va, vb = statistics.variance(peer) / len(peer), statistics.variance(ours) / len(ours)
    diff, se = statistics.fmean(peer) - statistics.fmean(ours), (va + vb) ** 0.5
    # Welch's dof; with no spread on either side (identical runs) the pooled dof
    spread = va**2 / (len(peer) - 1) + vb**2 / (len(ours) - 1)
    dof = (va + vb) ** 2 / spread if spread > 0 else len(peer) + len(ours) - 2
    upper, low95 = diff + t95(dof) * se, diff - t975(int(dof)) * se
    verdict = "at least as much" if upper < margin else "less" if low95 > 0 else "undecided"
    return {"diff": diff, "upper95": upper, "low95": low95, "dof": dof, "verdict": verdict}


def seed_correlation(a: list[dict], b: list[dict]) -> float | None:
    """Pearson r of two arms' greedy accuracies over the seeds they share (records in seed order):
    how much a run's outcome follows what the seed fixes in both (e.g. the data order). None
    below 3 seeds or without spread."""
    x, y = [r["greedy_accuracy"] for r in a], [r["greedy_accuracy"] for r in b]
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return statistics.correlation(x, y)


def t975(dof: int) -> float:
    """The two-sided 95 % t multiplier; beyond 30 dof the value at 30 (slightly wide)."""
    if dof < 1:
        raise ValueError(f"a t interval needs at least 1 degree of freedom, not {dof}")
    return _T975[min(dof, 30) - 1]


def replay_lines(runs: dict[str, dict[int, dict]]) -> list[str]:
    """The replay arms: how far their final parameters end from the TRL run whose batches they
    trained on (relative L2 over all parameters), and the distance after step k against TRL's
    own move from the base by then, where the TRL run saved its parameters."""
    arms = [a for a in runs if a.startswith("e3rl-replay")]
    if not arms:
        return []
    lines = [
        "",
        "Replay arms (e3rl's loop on the trl run's batches of the same seed): final parameters' "
        "relative L2 distance to TRL's; greedy accuracy, TRL's in brackets:",
        "",
    ]
    for a in arms:
        for seed, r in sorted(runs[a].items()):
            trl = runs.get("trl", {}).get(seed)
            mine = r["greedy_accuracy"]
            theirs = f" ({trl['greedy_accuracy']:.3f})" if trl else ""
            trace = ", ".join(
                f"{t['step']}: {t['distance']:.2g} / {t['their_move']:.2g}"
                for t in r.get("distance_trace", [])
            )
            lines.append(
                f"- {a} seed {seed}: distance {r['param_distance_to_trl']['relative_l2']:.2g}, "
                f"greedy {mine:.3f}{theirs}"
                + (f"; after step k, distance / TRL's move: {trace}" if trace else "")
            )
    return lines


def summarize(out: Path, base_eval: dict | None, arm_order: list[str]) -> str:
    """summary.md: every record under `out`, arms in `arm_order`."""
    import numpy as np

    runs = _load(out)
    arms = [a for a in arm_order if a in runs]
    lines = ["# Parity with TRL: greedy accuracy from one base", ""]
    if base_eval:
        lines.append(
            f"Base model: greedy {base_eval['greedy_accuracy']:.3f}, mean@8 "
            f"{base_eval['mean_at_8']:.3f}, per level "
            + ", ".join(f"L{k} {v:.2f}" for k, v in base_eval["by_level"].items())
            + "."
        )
        lines.append("")
    seeds = sorted({s for a in arms for s in runs[a]})
    lines += [
        "Greedy accuracy / mean@8 at T = 1 per seed:",
        "",
        "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean greedy | mean@8 |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    for a in arms:
        g = [runs[a][s]["greedy_accuracy"] if s in runs[a] else None for s in seeds]
        m = [runs[a][s]["mean_at_8"] for s in seeds if s in runs[a]]
        m8 = [runs[a][s]["mean_at_8"] if s in runs[a] else None for s in seeds]
        cells = [f"{x:.3f} / {y:.3f}" if x is not None else "–" for x, y in zip(g, m8, strict=True)]
        have = [x for x in g if x is not None]
        lines.append(
            f"| {a} | " + " | ".join(cells) + f" | {np.mean(have):.3f} | {np.mean(m):.3f} |"
        )
    levels = {k for a in arms for r in runs[a].values() for k in r["by_level"]}
    levels = sorted(levels | set(base_eval["by_level"] if base_eval else ()), key=int)
    if not arms:
        lines += ["No run has finished yet.", ""]
    lines += [
        "",
        "Greedy accuracy per level (mean over seeds):",
        "",
        "| arm | " + " | ".join(f"L{k}" for k in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    if base_eval:
        lines.append(
            "| base | " + " | ".join(f"{base_eval['by_level'][k]:.3f}" for k in levels) + " |"
        )
    for a in arms:
        vals = [np.mean([r["by_level"][k] for r in runs[a].values()]) for k in levels]
        lines.append(f"| {a} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    lines += [
        "",
        "Level-1 greedy responses by form, all seeds pooled (count, of which wrong):",
        "",
        "| arm | direct | worked | no answer | other |",
        "|---|---|---|---|---|",
    ]
    forms = ("direct", "worked", "no answer", "other")
    sources = ([("base", [base_eval])] if base_eval else []) + [
        (a, list(runs[a].values())) for a in arms
    ]
    for name, recs in sources:
        count = dict.fromkeys(forms, 0)
        wrong = dict.fromkeys(forms, 0)
        for rec in recs:
            for it in rec["items"]:
                if str(it.get("level")) == "1":
                    f = response_form(it["response"])
                    count[f] += 1
                    wrong[f] += not it["correct"]
        lines.append(f"| {name} | " + " | ".join(f"{count[f]} ({wrong[f]})" for f in forms) + " |")
    lines += [
        "",
        "Run-level differences of greedy accuracy (all runs of each arm):",
        "",
    ]
    for i, a in enumerate(arms):
        for b in arms[i + 1 :]:
            ga = [r["greedy_accuracy"] for r in runs[a].values()]
            gb = [r["greedy_accuracy"] for r in runs[b].values()]
            lines.append(f"- {a} − {b}: {seed_level_difference(ga, gb)}")
    if "trl" in runs and "e3rl" in runs and len(runs["trl"]) > 1 and len(runs["e3rl"]) > 1:
        ni = non_inferiority(
            [r["greedy_accuracy"] for r in runs["trl"].values()],
            [r["greedy_accuracy"] for r in runs["e3rl"].values()],
        )
        lines += [
            "",
            f"Non-inferiority of e3rl to TRL (margin {NONINFERIORITY_MARGIN}, Welch t over runs): "
            f"trl − e3rl {ni['diff']:+.4f}, one-sided 95 % upper bound {ni['upper95']:+.4f} "
            f"({ni['dof']:.1f} dof) → e3rl learns **{ni['verdict']}**.",
        ]
    if all(a in runs for a in FACTORIAL):
        cells = {FACTORIAL[a]: [r["greedy_accuracy"] for r in runs[a].values()] for a in FACTORIAL}
        eff = factorial_effects(cells)
        lines += [
            "",
            "The swap arms as a 2 x 2 design (trainer x generation path), greedy accuracy, 95 % t "
            "with the variance pooled over the four cells:",
            "",
            f"- trainer, TRL − e3rl: {eff['trainer'][0]:+.3f} ± {eff['trainer'][1]:.3f}",
            f"- generation path, generate − e3rl engine: {eff['generation'][0]:+.3f} ± "
            f"{eff['generation'][1]:.3f}",
            f"- interaction: {eff['interaction'][0]:+.3f} ± {eff['interaction'][1]:.3f}",
        ]
    lines += replay_lines(runs)
    lines += [
        "",
        "Paired differences (seeds present in both arms; 95 % bootstrap over prompts):",
        "",
    ]
    for i, a in enumerate(arms):
        for b in arms[i + 1 :]:
            common = sorted(set(runs[a]) & set(runs[b]))
            if not common:
                continue
            ca = [[it["correct"] for it in runs[a][s]["items"]] for s in common]
            cb = [[it["correct"] for it in runs[b][s]["items"]] for s in common]
            d, lo, hi = paired_bootstrap(ca, cb)
            pairs = [
                (x, y) for sa, sb in zip(ca, cb, strict=True) for x, y in zip(sa, sb, strict=True)
            ]
            wins = sum(x and not y for x, y in pairs)
            losses = sum(y and not x for x, y in pairs)
            r = seed_correlation([runs[a][s] for s in common], [runs[b][s] for s in common])
            lines.append(
                f"- {a} − {b}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}] over seeds {common}; "
                f"prompt-seed pairs {a} right / {b} wrong: {wins}, the reverse: {losses}"
                + ("" if r is None else f"; greedy accuracy correlated over the seeds r = {r:+.2f}")
            )
    return "\n".join(lines) + "\n"
