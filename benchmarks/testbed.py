"""The testbed comparison (issue 15): the method's arms against uniform GRPO, many paired seeds.

    python benchmarks/testbed.py                         # every arm, seeds 0-7, on the chosen testbed
    python benchmarks/testbed.py --arms uniform,e3rl --seeds 8,9   # a part; the rest later
    python benchmarks/testbed.py --quick                 # uniform vs e3rl, 2 seeds, a few steps
    python benchmarks/testbed.py --summarize             # summary.json/.md and figure from the JSONs
    python benchmarks/testbed.py --candidate arith --seeds 0   # section 1's properties, uniform only

Every run is a fresh `e3rl train` process on the testbed's config and overrides, with the same
base model (the testbed fixes `model.warm_start.seed`), the same budget per step (batch_size x n;
every record checks it) and `trainer.seed=k` for seed k of every arm: seed k shares its data order
across arms. One JSON per (arm, seed) under OUT/runs/ARM-sSEED.json; a JSON present is a job done
(delete it to rerun), so the suite accumulates over several invocations. After training, the
final model gets `e3rl eval` with pass_n samples per validation prompt at temperature 1, and the run
directory's checkpoints and final model are deleted. The base model is evaluated once per out dir
(OUT/base.json: pass@k on the validation split; per-prompt pass rates on training prompts).
Statistics, thresholds and verdict rules: benchmarks/testbed_stats.py and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import arms
import testbed_report as R
import testbed_stats as S
from testbed_defs import (
    ARMS,
    CHOSEN,
    FINAL_T_TOLERANCE,
    PASS_K,
    QUICK_ARMS,
    QUICK_SEEDS,
    SPREAD_SAMPLES,
    TESTBEDS,
    arm_overrides,
    testbed_config,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks/results/testbed")


# --------------------------------------------------------------------------- records


def record_path(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / f"{arm}-s{seed}.json"


def _write_json(path: Path, obj: object) -> None:
    """Written whole or not at all: a JSON present is a finished job."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --------------------------------------------------------------------------- one run


def _eval(
    model: str,
    tb: dict,
    extra: list[str],
    data: str,
    n: int,
    ks: Sequence[int],
    out_dir: Path,
    threads: int,
    limit: int = 0,
    temperature: float = 1.0,
) -> dict:
    args = ["--limit", str(limit)] if limit else []
    arms._cli(
        "eval",
        model,
        "--config",
        tb["config"],
        "--data",
        data,
        "--n",
        str(n),
        "--k",
        ",".join(str(k) for k in ks),
        "--temperature",
        str(temperature),
        "--output-dir",
        str(out_dir),
        *args,
        *tb["overrides"],
        *extra,
        threads=threads,
    )
    return json.loads((out_dir / "eval.json").read_text())


def _passk(res: dict) -> dict:
    return {"greedy": res["greedy_accuracy"], **res.get("pass_at_k", {})}


def _param_count(model_dir: Path) -> int | None:
    """Parameters stored in the model's safetensors (tied embeddings counted once)."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    total = 0
    for f in files:
        with safe_open(str(f), "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118
    return total or None


def step_seconds(rows: Sequence[dict]) -> float:
    """Median over steps of the step's own time (plan + generate + reward + update, as logged in
    metrics.jsonl): validation and start-up excluded."""
    keys = ("time_plan", "time_generate", "time_reward", "time_update")
    return statistics.median(sum(r.get(k, 0.0) for k in keys) for r in rows)


def make_record(
    arm: str,
    seed: int,
    tb: dict,
    overrides: list[str],
    rows: list[dict],
    summary: dict,
    passk: dict,
    wall: float,
    threads: int,
    base_point: float,
) -> dict:
    """The compact, self-contained record of one run (the summary is rebuilt from these only).

    `val_curve` is the testbed's accuracy (`accuracy`: greedy, or pass@1 at T=1 from
    trainer.eval_n samples a prompt) against cumulative rollouts; `base_point` its step-0 value."""
    key = "val_pass@1" if tb.get("accuracy") == "pass@1" else "val_accuracy"
    curve = [[0, 0, base_point]] + [
        [r["step"], r["cum_rollouts"], r[key]] for r in rows if key in r
    ]
    every = max(1, len(rows) // 60)
    t1 = [r["entropy_t1"] for r in rows]
    per_step = [r["rollouts"] for r in rows]
    return {
        "arm": arm,
        "seed": seed,
        "testbed": tb["name"],
        "steps": tb["steps"],
        "eval_every": tb["eval_every"],
        "pass_n": tb["pass_n"],
        "overrides": overrides,
        "threads": threads,
        "commit": _commit(),
        "wall_seconds": wall,  # not a benchmark figure: runs share the cores
        "step_seconds": step_seconds(rows),
        "budget_per_step": tb["budget"],
        "rollouts_per_step": {"min": min(per_step), "max": max(per_step)},
        # an arm that skips rollouts spends at most the budget, every other one exactly it
        "budget_ok": max(per_step) <= tb["budget"]
        if any(o.startswith("budget.skip_below=") for o in overrides)
        else min(per_step) == max(per_step) == tb["budget"],
        "accuracy": tb.get("accuracy", "greedy"),
        "base_val_accuracy": base_point,
        "final_val_accuracy": curve[-1][2],
        "val_curve": curve,
        "greedy_curve": [[0, 0, summary["base_val_accuracy"]]]
        + [[r["step"], r["cum_rollouts"], r["val_accuracy"]] for r in rows if "val_accuracy" in r],
        "val_by_level_curve": [[r["step"], r["val_by_level"]] for r in rows if "val_by_level" in r],
        "rollouts": summary["rollouts"],
        "tokens": summary["tokens"],
        "pass_at_k": passk,
        **{
            f"mean_frac_rollouts_{g}": statistics.fmean(r[f"frac_rollouts_{g}"] for r in rows)
            for g in S.GROUPS
        },
        **{f"mean_frac_{g}": statistics.fmean(r[f"frac_{g}"] for r in rows) for g in S.GROUPS},
        "entropy_tracking": arms.entropy_tracking(rows),
        "entropy_t1_head_tail": S.head_tail_drop(t1, max(1, min(S.HEAD_TAIL_STEPS, len(t1) // 2))),
        "series_every": every,
        **{
            key: arms._series(rows, key, every)
            for key in ("entropy", "entropy_t1", "target_entropy", "temperature", "cum_rollouts")
        },
        **{f"frac_rollouts_{g}": arms._series(rows, f"frac_rollouts_{g}", every) for g in S.GROUPS},
    }


def run_one(
    arm: str, seed: int, tb: dict, runs: Path, extra: list[str], threads: int, base: dict
) -> dict:
    """Train one (arm, seed), evaluate its final model, delete the heavy files, return its record."""
    run = runs / f"{arm}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    overrides = [*tb["overrides"], *arm_overrides(arm, tb["batch_size"]), *extra]
    sampled = tb.get("accuracy") == "pass@1"
    if sampled:  # validation samples eval_n responses a prompt at T=1 (pass@1 = their mean)
        overrides.append(f"trainer.eval_n={tb['eval_n']}")
    t0 = time.perf_counter()
    arms._cli(
        "train",
        tb["config"],
        *overrides,
        f"trainer.seed={seed}",
        f"trainer.total_steps={tb['steps']}",
        f"trainer.eval_every={tb['eval_every']}",
        f"trainer.output_dir={run}",
        "trainer.save_every=0",
        "--quiet",
        threads=threads,
    )
    wall = time.perf_counter() - t0
    ks = [k for k in PASS_K if k <= tb["pass_n"]]
    res = _eval(str(run / "final"), tb, extra, tb["val_source"], tb["pass_n"], ks, run, threads)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    final_t = rows[-1]["temperature"] if rows else 1.0
    at_final_t = None
    if abs(final_t - 1.0) > FINAL_T_TOLERANCE:
        # A temperature-controlled arm samples its last rollouts at final_t, not at T = 1: the
        # pass@k of the policy it ends with as it samples (the T = 1 figures stay the headline).
        res_t = _eval(
            str(run / "final"),
            tb,
            extra,
            tb["val_source"],
            tb["pass_n"],
            ks,
            run,
            threads,
            temperature=final_t,
        )
        at_final_t = {"temperature": final_t, "pass_at_k": _passk(res_t)}
    params = _param_count(run / "final")
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    shutil.rmtree(run / "final", ignore_errors=True)
    (run / "eval.json").unlink()  # every prompt's responses: the record keeps the figures
    if len(rows) != tb["steps"]:
        raise RuntimeError(f"{run}/metrics.jsonl has {len(rows)} steps, not {tb['steps']}")
    summary = json.loads((run / "summary.json").read_text())
    # the step-0 point: the base's greedy accuracy, or its pass@1 from base.json's pass_n samples
    start = base["pass_at_k"]["1"] if sampled else summary["base_val_accuracy"]
    rec = make_record(arm, seed, tb, overrides, rows, summary, _passk(res), wall, threads, start)
    rec["model_params"] = params
    # which difficulty pays when an allocator moves the budget between levels
    rec["by_level"] = res.get("by_group", {}).get("level")
    if at_final_t is not None:
        rec["pass_at_k_final_temperature"] = at_final_t
    return rec


def greedy_fingerprint(res: dict) -> str:
    """The base model as it behaves: a hash of its greedy responses to the validation prompts.
    A machine whose floating-point path warm-starts another base gives another hash."""
    text = "\n".join(f"{i['id']}\t{i['response']}" for i in res["items"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_base(cached: dict, greedy: dict, path: Path) -> None:
    """Refuses to pair new runs with records made from another base model than the one built
    here (older base.json files hold no fingerprint: their greedy accuracy is compared)."""
    mine, theirs = greedy_fingerprint(greedy), cached.get("greedy_fingerprint")
    same = mine == theirs if theirs else greedy["greedy_accuracy"] == cached["pass_at_k"]["greedy"]
    if not same:
        raise SystemExit(
            f"{path} was made from another base model than the one built here (greedy accuracy "
            f"{cached['pass_at_k']['greedy']:.4f} there, {greedy['greedy_accuracy']:.4f} here; "
            f"fingerprint {theirs or 'not recorded'} there, {mine} here): this machine's "
            "floating-point path warm-starts another base, so its runs would not pair with the "
            "records there. Use another --out (and an empty E3RL_CACHE) for a suite of its own."
        )


def base_eval(tb: dict, out: Path, runs: Path, extra: list[str], threads: int) -> dict:
    """The base model's pass@k on validation and per-prompt pass rates on training prompts,
    cached in OUT/base.json (recomputed only if the settings it was made with differ)."""
    path = out / "base.json"
    want = {
        "testbed": tb["name"],
        "pass_n": tb["pass_n"],
        "spread_limit": tb["spread_limit"],
        "spread_samples": SPREAD_SAMPLES,
        "overrides": [*tb["overrides"], *extra],
    }
    if path.is_file():
        cached = json.loads(path.read_text())
        if all(cached.get(k) == v for k, v in want.items()):
            # builds the base here, once, before runs in parallel would each build it
            greedy = _eval("task", tb, extra, tb["val_source"], 0, [], runs / "base-check", threads)
            check_same_base(cached, greedy, path)
            return cached
    ks = [k for k in PASS_K if k <= tb["pass_n"]]
    val = _eval("task", tb, extra, tb["val_source"], tb["pass_n"], ks, runs / "base-val", threads)
    train = _eval(
        "task",
        tb,
        extra,
        tb["train_source"],
        SPREAD_SAMPLES,
        [1],
        runs / "base-train",
        threads,
        limit=tb["spread_limit"],
    )
    base = {
        **want,
        "greedy_fingerprint": greedy_fingerprint(val),
        "pass_at_k": _passk(val),
        "train_pass_rates": [i["num_correct"] / SPREAD_SAMPLES for i in train["items"]],
    }
    _write_json(path, base)
    return base


# --------------------------------------------------------------------------- jobs


def run_jobs(
    jobs: Sequence[tuple[str, int]],
    out: Path,
    runner: Callable[[str, int], dict],
    n_jobs: int = 1,
) -> list[str]:
    """Run the jobs without a record yet, `n_jobs` at a time; each record is written as its
    job ends. Returns the failures ("ARM-sSEED: error"); the other jobs go on."""
    todo = [j for j in jobs if not record_path(out, *j).is_file()]
    if len(todo) < len(jobs):
        print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already have a record: skipped")
    failures = []
    with ThreadPoolExecutor(max(1, n_jobs)) as pool:
        futures = {pool.submit(runner, arm, seed): (arm, seed) for arm, seed in todo}
        for fut in as_completed(futures):
            arm, seed = futures[fut]
            try:
                rec = fut.result()
            except Exception as e:  # one broken run must not lose the others
                failures.append(f"{arm}-s{seed}: {e}")
                print(f"FAILED {arm} seed {seed}: {e}", flush=True)
                continue
            _write_json(record_path(out, arm, seed), rec)
            print(
                f"{arm} seed {seed}: val {rec['base_val_accuracy']:.3f} -> "
                f"{rec['final_val_accuracy']:.3f}",
                flush=True,
            )
    return failures


# what every record of one out dir shares (the thread count too: it changes the numerics)
SETTINGS = ("testbed", "steps", "eval_every", "pass_n", "threads", "accuracy")
DEFAULTS = {"accuracy": "greedy"}  # records and testbeds from before the setting existed


def _setting(d: dict, key: str):
    return d.get(key, DEFAULTS.get(key))


def check_settings(out: Path, tb: dict) -> None:
    """Refuse to add runs to an out dir whose records were made with other settings (they would
    be skipped as done, then mixed into one summary)."""
    for f in sorted((out / "runs").glob("*.json")):
        rec = json.loads(f.read_text())
        have = {k: _setting(rec, k) for k in SETTINGS}
        want = {k: tb["name"] if k == "testbed" else _setting(tb, k) for k in SETTINGS}
        if have != want:
            raise SystemExit(
                f"{f} was made with {have}, this invocation asks {want}: use another --out "
                "(or delete the records to redo them)"
            )


def load_records(out: Path) -> list[dict]:
    """Every record under OUT/runs; one testbed, step count and pass_n, or a clear error."""
    files = sorted((out / "runs").glob("*.json"))
    records = [json.loads(f.read_text()) for f in files]
    order = {arm: i for i, arm in enumerate(ARMS)}  # uniform first, then as ARMS lists them
    pairs = sorted(
        zip(files, records, strict=True),
        key=lambda fr: (order.get(fr[1]["arm"], len(order)), fr[1]["arm"], fr[1]["seed"]),
    )
    files, records = [f for f, _ in pairs], [r for _, r in pairs]
    for key in SETTINGS:
        values = {_setting(r, key) for r in records}
        if len(values) > 1:
            names = ", ".join(
                f"{f.name}={_setting(r, key)}" for f, r in zip(files, records, strict=True)
            )
            raise SystemExit(f"{out}/runs mixes runs of different {key}: {names}")
    return records


# --------------------------------------------------------------------------- summary


def testbed_block(name: str, out: Path, candidates: Path, records: list[dict], base: dict) -> dict:
    """The summary's testbed block: the candidate measurement of this testbed when there is one,
    else what the suite's own uniform runs and base evaluation give."""
    path = candidates / f"{name}.json"
    params = next((r.get("model_params") for r in records if r.get("model_params")), None)
    if path.is_file():
        cand = json.loads(path.read_text())
        source = str(path)
    else:
        uniform = [r for r in records if r["arm"] == "uniform"]
        cand = S.candidate_properties(uniform, base["pass_at_k"], base["train_pass_rates"])
        source = f"{out}/runs (uniform arm), {out}/base.json"
    keys = (
        "base_pass_rate_spread",
        "uniform_late_gain_share",
        "uniform_entropy_drop",
        "uniform_passk_minus_base",
        "step_seconds",
        "properties",
    )
    block = {
        "name": name,
        "model_params": cand.get("model_params", params),
        **{k: cand[k] for k in keys},
        "source": source,
    }
    # a step timed alone (benchmarks/testbed_step_time.py) overrides the figure of runs that
    # shared the cores, and decides the "cheap" property
    alone = out / "step_seconds.json"
    if alone.is_file() and json.loads(alone.read_text()).get("testbed") == name:
        timed = json.loads(alone.read_text())
        block["step_seconds_shared"] = block["step_seconds"]
        block["step_seconds"] = timed["median"]
        block["step_seconds_how"] = (
            f"alone on the machine, {timed['threads']} threads, {timed['cpu']} ({alone.name})"
        )
        block["properties"] = {**block["properties"], "cheap": timed["cheap"]}
    return block


def _base(out: Path) -> dict:
    path = out / "base.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the suite (it evaluates the base model first)")
    return json.loads(path.read_text())


def finish(out: Path, testbed: str, candidates: Path) -> dict | None:
    """Rebuild summary.json, summary.md and suite.png from OUT's JSONs only."""
    records = load_records(out)
    if not any(r["arm"] == "uniform" for r in records):
        print(f"no uniform runs under {out}/runs yet: no summary")
        return None
    base = _base(out)
    summary = S.summarize(
        records, base["pass_at_k"], testbed_block(testbed, out, candidates, records, base)
    )
    # the code the records were made with: records of one setting but another commit may still
    # differ (uniform seeds 0-1 of an earlier session did not reproduce; their commit was unknown)
    summary["commits"] = sorted({r["commit"] for r in records if r.get("commit")})
    _write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(R.to_markdown(summary))
    R.plot(records, summary, out / "suite.png")
    print(R.to_markdown(summary))
    return summary


# --------------------------------------------------------------------------- candidates


def measure_candidate(name: str, out: Path, candidates: Path, label: str | None = None) -> dict:
    """Section 1's properties of one testbed from its uniform runs: candidates/NAME.json and its
    row in candidates.md."""
    records = [r for r in load_records(out) if r["arm"] == "uniform"]
    if not records:
        raise SystemExit(f"no uniform runs under {out}/runs to measure {name!r} on")
    base = _base(out)
    cand = S.candidate_properties(records, base["pass_at_k"], base["train_pass_rates"])
    tb = TESTBEDS[name]
    cand = {
        "name": label or name,  # a --quick measurement is labelled NAME-quick, not NAME
        "config": tb["config"],
        "overrides": records[0]["overrides"],  # the testbed's and any given on the command line
        "steps": records[0]["steps"],
        "model_params": next((r.get("model_params") for r in records), None),
        "threads": records[0]["threads"],
        "step_seconds_how": "median of the per-step time_plan + time_generate + time_reward + "
        "time_update logged in metrics.jsonl (validation excluded)",
        **cand,
    }
    _write_json(candidates / f"{label or name}.json", cand)
    (candidates / "candidates.md").write_text(R.candidates_table(candidates))
    return cand


# --------------------------------------------------------------------------- CLI


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--testbed", default=CHOSEN, help=f"one of {', '.join(TESTBEDS)}")
    p.add_argument("--arms", help="comma-separated (default: all; --quick: uniform,e3rl)")
    p.add_argument("--seeds", help="default 0-7 (suite), 0 (--candidate), 0,1 (--quick)")
    p.add_argument("--steps", type=int, help="override the testbed's steps")
    p.add_argument("--eval-every", type=int, help="override the testbed's eval_every")
    p.add_argument("--pass-n", type=int, help="override the testbed's pass_n (samples for pass@k)")
    p.add_argument(
        "--jobs",
        type=int,
        help="runs in parallel, 2 // jobs torch threads each (default 2; "
        "--candidate: 1, so that its seconds a step are at 2 threads)",
    )
    p.add_argument(
        "--out",
        help=f"default {RESULTS} for the chosen testbed, else {RESULTS}/NAME; --candidate: "
        "CANDIDATES/NAME; --quick appends -quick",
    )
    p.add_argument("--runs-dir", help="run directories (default: runs/bench/ + the out dir's path)")
    p.add_argument("--candidates", default=str(RESULTS / "candidates"))
    p.add_argument("--quick", action="store_true", help="uniform vs e3rl, seeds 0,1, few steps")
    p.add_argument("--summarize", action="store_true", help="rebuild the summary from the JSONs")
    p.add_argument("--candidate", metavar="NAME", help="section 1's properties (uniform only)")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    return p.parse_args()


def _settings(a: argparse.Namespace) -> tuple[dict, Path]:
    """The testbed's settings as this invocation runs them, and its out dir."""
    name = a.candidate or a.testbed
    tb = testbed_config(name, a.overrides)
    if a.quick:
        tb.update(tb["quick"])
        a.arms, a.seeds = a.arms or QUICK_ARMS, a.seeds or QUICK_SEEDS
    if a.candidate:
        a.arms = "uniform"
    a.seeds = a.seeds or ("0" if a.candidate else "0,1,2,3,4,5,6,7")
    a.arms = a.arms or ",".join(ARMS)
    a.jobs = a.jobs or (1 if a.candidate else 2)
    tb["threads"] = max(1, 2 // a.jobs)
    for key in ("steps", "eval_every", "pass_n"):
        if getattr(a, key) is not None:
            tb[key] = getattr(a, key)
    if a.out:
        return tb, Path(a.out)
    # candidate runs stay apart from the suite's: another thread count, other seeds
    if a.candidate:
        out = Path(a.candidates) / name
    else:
        out = RESULTS if name == CHOSEN else RESULTS / name
    return tb, out.with_name(out.name + "-quick") if a.quick else out


def _runs_dir(out: Path) -> Path:
    """runs/bench/ mirrors benchmarks/results/ (another out dir: runs/bench/testbed-other/)."""
    try:
        return Path("runs/bench") / out.resolve().relative_to(REPO / "benchmarks" / "results")
    except ValueError:
        return Path("runs/bench/testbed-other") / out.name


def main() -> None:
    a = _args()
    tb, out = _settings(a)
    candidates = Path(a.candidates)
    if a.summarize:
        finish(out, tb["name"], candidates)
        return
    runs = Path(a.runs_dir) if a.runs_dir else _runs_dir(out)
    os.environ.setdefault("OMP_NUM_THREADS", str(tb["threads"]))
    check_settings(out, tb)
    jobs = [(arm, int(s)) for s in a.seeds.split(",") for arm in a.arms.split(",")]
    for arm, _ in jobs:
        arm_overrides(arm, tb["batch_size"])  # an unknown arm fails before anything runs
    # The base is built (warm start, cached) and evaluated before anything runs in parallel.
    base = base_eval(tb, out, runs, a.overrides, 2 if a.jobs == 1 else 1)
    failures = run_jobs(
        jobs,
        out,
        lambda arm, seed: run_one(arm, seed, tb, runs, a.overrides, tb["threads"], base),
        a.jobs,
    )
    if a.candidate:
        label = tb["name"] + ("-quick" if a.quick else "")
        print(json.dumps(measure_candidate(tb["name"], out, candidates, label), indent=1))
    else:
        finish(out, tb["name"], candidates)
    if failures:
        raise SystemExit("failed runs:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
