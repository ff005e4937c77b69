"""Where the testbed's rollouts went: the allocators' budgets and their own forecasts, by epoch.

    PYTHONPATH=src .venv/bin/python benchmarks/testbed_allocation.py [--runs-dir runs/bench/testbed]

Reads the `metrics.jsonl` of every finished suite run left in the run directories
(benchmarks/testbed.py keeps them and deletes only the models) and writes `benchmarks/results/testbed/allocation.json`
and `.md`: per arm and epoch of the training set, means over seeds of the per-step figures the
trainer logs (an arm found replaces its entry; arms not found keep theirs):

- `alloc_min` / `alloc_max`: the fewest and most rollouts a prompt got in the step;
- `alloc_by_level`: mean rollouts a prompt by the task's difficulty level;
- `exp_mixed`: the share of rollouts the allocator expected in mixed groups under its plan, and
  `exp_mixed_uniform` the same under a uniform plan (its own forecast of what reallocating gains);
- `mixed`, `all_wrong`, `all_correct`: where the rollouts actually fell;
- `temperature`, `prompts_rolled`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "testbed"
SCALARS = {
    "alloc_min": "alloc_min",
    "alloc_max": "alloc_max",
    "exp_mixed": "exp_frac_rollouts_mixed",
    "exp_mixed_uniform": "exp_frac_rollouts_mixed_uniform",
    "mixed": "frac_rollouts_mixed",
    "all_wrong": "frac_rollouts_all_wrong",
    "all_correct": "frac_rollouts_all_correct",
    "temperature": "temperature",
    "prompts_rolled": "prompts_rolled",
}


def epoch_means(rows: list[dict]) -> dict[int, dict[str, float]]:
    """One run's per-epoch means of the SCALARS and of alloc_by_level (levels as strings)."""
    by_epoch: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_epoch[r["epoch"]].append(r)
    out = {}
    for epoch, rs in sorted(by_epoch.items()):
        m = {name: statistics.fmean(r[key] for r in rs) for name, key in SCALARS.items()}
        levels = sorted({lv for r in rs for lv in r.get("alloc_by_level", {})}, key=int)
        m["alloc_by_level"] = {
            lv: statistics.fmean(r["alloc_by_level"][lv] for r in rs if lv in r["alloc_by_level"])
            for lv in levels
        }
        m["steps"] = len(rs)
        out[epoch] = m
    return out


def pool(runs: list[dict[int, dict]]) -> dict[int, dict]:
    """Means over runs of their per-epoch means (epochs every run has)."""
    common = set.intersection(*(set(r) for r in runs))
    out = {}
    for epoch in sorted(common):
        ms = [r[epoch] for r in runs]
        m = {name: statistics.fmean(x[name] for x in ms) for name in SCALARS}
        m["alloc_by_level"] = {
            lv: statistics.fmean(x["alloc_by_level"][lv] for x in ms)
            for lv in ms[0]["alloc_by_level"]
        }
        m["runs"], m["steps"] = len(ms), ms[0]["steps"]
        out[epoch] = m
    return out


def collect(runs_dir: Path, records: Path) -> dict[str, dict]:
    """Every finished run (one with a suite record in `records`) with allocation metrics."""
    arms: dict[str, list] = defaultdict(list)
    seeds: dict[str, list[int]] = defaultdict(list)
    for d in sorted(runs_dir.iterdir()):
        m = re.fullmatch(r"(.+)-s(\d+)", d.name)
        f = d / "metrics.jsonl"
        if not (m and f.is_file() and (records / f"{d.name}.json").is_file()):
            continue  # not a suite run, or one still running
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        if not rows or "alloc_min" not in rows[0]:
            continue
        arms[m[1]].append(epoch_means(rows))
        seeds[m[1]].append(int(m[2]))
    return {a: {"seeds": sorted(seeds[a]), "epochs": pool(rs)} for a, rs in arms.items()}


def merge(path: Path, found: dict[str, dict]) -> dict[str, dict]:
    """The arms already in `path` (run directories are deleted between sessions, the figures
    stay) with those just `found` in their place; arms sorted by name. Epoch keys come back
    from JSON as strings and stay so."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    fresh = json.loads(json.dumps(found))  # the same key types as the arms read back
    return dict(sorted({**old, **fresh}.items()))


def to_markdown(res: dict[str, dict]) -> str:
    lines = [
        "# Where the testbed's rollouts went, by epoch of the training set",
        "",
        "Means over seeds of per-step figures (benchmarks/testbed_allocation.py). `expected "
        "mixed` is the allocator's forecast of the share of rollouts in mixed groups under its "
        "plan, `under uniform` its forecast for 8 a prompt; `mixed` what happened.",
        "",
        "| arm | seeds | epoch | steps | rollouts a prompt: min / max | by level | expected mixed "
        "| under uniform | mixed | all-wrong | all-correct | T |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arm, a in res.items():
        for epoch, m in a["epochs"].items():
            levels = " ".join(f"{lv}:{v:.1f}" for lv, v in m["alloc_by_level"].items())
            lines.append(
                f"| {arm} | {len(a['seeds'])} | {epoch} | {m['steps']} | "
                f"{m['alloc_min']:.1f} / {m['alloc_max']:.1f} | {levels} | {m['exp_mixed']:.3f} | "
                f"{m['exp_mixed_uniform']:.3f} | {m['mixed']:.3f} | {m['all_wrong']:.3f} | "
                f"{m['all_correct']:.3f} | {m['temperature']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench" / "testbed")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    found = collect(a.runs_dir, a.out / "runs")
    if not found:
        raise SystemExit(
            f"no suite runs with allocation metrics under {a.runs_dir} "
            f"(a run counts when {a.out / 'runs'} holds its record ARM-sSEED.json)"
        )
    res = merge(a.out / "allocation.json", found)
    (a.out / "allocation.json").write_text(json.dumps(res, indent=1))
    text = to_markdown(res)
    (a.out / "allocation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
