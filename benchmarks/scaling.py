"""How e3rl's step cost grows: step time and peak memory against prompts per step, response length
and model size.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/scaling.py
    # check that it runs (about a minute, numbers meaningless):
    .venv/bin/python benchmarks/scaling.py --steps 1 --warmup 1 --threads 1 \
        --prompts 2 4 --lengths 8 16 --sizes 1M --out /tmp/scaling.json

Three sweeps around one centre (8 prompts x 8 completions, 64 new tokens, the 4.3M Qwen2):
prompts per step (8, 16, 32, 64), response length (16, 64, 256) and model size (1M, 4.3M, 17M
parameters: hidden 128 / 256 / 512, 4 layers, vocabulary 384). A step is the e3rl step of
trl_speed.py (rollouts of exactly `L` tokens, temperature 1, no KL, one optimizer step) with the
trainer's default micro-batch of 64 sequences for the update. A fourth sweep runs 256 new tokens
with smaller update micro-batches (`--micro-batches`, default 16 and 32): at long responses the
update's activations set the peak memory, and the micro-batch (`algo.micro_batch_size`) bounds
them. Each configuration runs in a fresh
process, so that its peak resident memory (ru_maxrss) is its own; `base_rss_mib` is the memory
after building the model, before the first step. Medians over `--steps` steps after `--warmup`.
Writes benchmarks/results/scaling.json, a markdown table (scaling.md) and, when matplotlib is
installed, docs/figures/scaling.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "scaling.json"
FIGURE = Path(__file__).parents[1] / "docs" / "figures" / "scaling.png"
CENTRE = {"size": "4.3M", "prompts": 8, "length": 64}


def one(spec: dict, steps: int, warmup: int, threads: int) -> dict:
    """Runs one configuration in this process and returns its record."""
    import speed_setup as S
    import torch

    torch.set_num_threads(threads)
    bench = S.build(spec["size"], num_prompts=max(256, spec["prompts"]))
    mb = spec.get("micro_batch", 64)
    step = S.E3RLStep(bench, spec["prompts"], 8, spec["length"], micro_batch=mb, share_model=True)
    base = S.peak_rss_mib()
    for _ in range(warmup + steps):
        step.step()
    med = S.summarize(step.history, warmup)
    return {
        **spec,
        "micro_batch": mb,
        "parameters": bench.params,
        "completions_per_prompt": 8,
        "median": med,
        "steps": step.history,
        "base_rss_mib": base,
        "peak_rss_mib": S.peak_rss_mib(),
        "generated_tokens_per_s": med["generated_tokens"] / med["step_s"],
    }


def sweeps(args) -> list[tuple[str, dict]]:
    out = [("prompts", {**CENTRE, "prompts": p}) for p in args.prompts]
    out += [("length", {**CENTRE, "length": n}) for n in args.lengths]
    out += [("size", {**CENTRE, "size": s}) for s in args.sizes]
    out += [
        ("micro_batch", {**CENTRE, "length": 256, "micro_batch": m}) for m in args.micro_batches
    ]
    return out


def table(records: list[dict]) -> str:
    lines = [
        "| sweep | model | params | prompts x 8 | new tokens | update micro-batch | step s "
        "| generate s | update s | tokens/s | peak RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        m = r["median"]
        lines.append(
            f"| {r['sweep']} | {r['size']} | {r['parameters']:,} | {r['prompts']} | {r['length']} "
            f"| {r.get('micro_batch', 64)} | {m['step_s']:.3f} | {m['generate_s']:.3f} | {m['update_s']:.3f} "
            f"| {r['generated_tokens_per_s']:.0f} | {r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def figure(records: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for col, (sweep, key, label) in enumerate(
        (
            ("prompts", "prompts", "prompts per step (x 8 completions)"),
            ("length", "length", "new tokens per completion"),
            ("size", "parameters", "parameters"),
        )
    ):
        rs = sorted((r for r in records if r["sweep"] == sweep), key=lambda r: r[key])
        if not rs:
            continue
        x = [r[key] for r in rs]
        for part in ("step_s", "generate_s", "update_s"):
            axes[0, col].plot(x, [r["median"][part] for r in rs], "o-", label=part[:-2])
        axes[1, col].plot(x, [r["peak_rss_mib"] for r in rs], "o-", label="peak")
        axes[1, col].plot(x, [r["base_rss_mib"] for r in rs], "o--", label="after build")
        for row, ylab in ((0, "seconds per step"), (1, "resident memory (MiB)")):
            ax = axes[row, col]
            ax.set_xscale("log")
            ax.set_xticks(
                x,
                [str(v) if key != "parameters" else r["size"] for v, r in zip(x, rs, strict=True)],
            )
            ax.minorticks_off()
            ax.set_ylabel(ylab)
            ax.set_xlabel(label)
            ax.legend(fontsize=8)
    fig.suptitle("e3rl step cost (median per step, 8 completions per prompt)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, nargs="*", default=[8, 16, 32, 64])
    ap.add_argument("--lengths", type=int, nargs="*", default=[16, 64, 256])
    ap.add_argument("--sizes", nargs="*", default=["1M", "4.3M", "17M"])
    ap.add_argument("--micro-batches", type=int, nargs="*", default=[16, 32])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--figure", type=Path, default=FIGURE)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one configuration, as JSON
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")
    if args.one:
        print(json.dumps(one(json.loads(args.one), args.steps, args.warmup, args.threads)))
        return

    import speed_setup as S

    bad = [s for s in args.sizes if s not in S.SIZES]
    if bad:
        ap.error(f"--sizes {bad}: valid sizes are {', '.join(S.SIZES)}")
    t_start = time.perf_counter()
    records = []
    for sweep, spec in sweeps(args):
        cmd = [sys.executable, __file__, "--one", json.dumps(spec)]
        cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
        cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"configuration {spec} failed:\n{proc.stderr[-3000:]}")
        rec = {"sweep": sweep, **json.loads(proc.stdout.strip().splitlines()[-1])}
        records.append(rec)
        m = rec["median"]
        print(
            f"{sweep:>11}: {spec['size']:>4} {spec['prompts']:>3} prompts x 8, {spec['length']:>3} "
            f"tokens, micro-batch {rec['micro_batch']}: {m['step_s']:.3f} s/step (generate {m['generate_s']:.3f}, update "
            f"{m['update_s']:.3f}), peak RSS {rec['peak_rss_mib']:.0f} MiB"
        )
    out = {
        "benchmark": "scaling",
        "environment": S.environment(args.threads),
        "work": {
            "completions_per_prompt": 8,
            "temperature": 1.0,
            "kl": 0.0,
            "update_micro_batch": "64 (the micro_batch sweep: as given)",
            "steps_measured": args.steps,
            "warmup_steps": args.warmup,
            "centre": CENTRE,
        },
        "records": records,
        "wall_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    md = args.out.with_suffix(".md")
    md.write_text(table(records))
    print(table(records))
    print(f"wrote {args.out} and {md}")
    if figure(records, args.figure):
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
