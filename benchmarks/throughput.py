"""Rollout throughput: e3rl's HF engine against raw `model.generate` on the same batch.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/throughput.py
    # check that it runs (seconds, numbers meaningless):
    .venv/bin/python benchmarks/throughput.py --repeats 2 --warmup 1 --threads 1 \
        --lengths 8 --out /tmp/throughput.json

Same model (the 4.3M-parameter Qwen2 of trl_speed.py), same 8 prompts of equal length x 8 samples,
temperature 1 with no top-k / top-p, exactly `L` new tokens per sample in both (generate:
`min_new_tokens = max_new_tokens`; engine: no stop token), fp32, no gradients. Raw `generate` gets
the 64 rows already expanded (one row per sample, as a trainer would pass them); the engine gets the
8 prompts with a count of 8 each, prefills each prompt once and also returns, per token, the
log-probability and the entropy that the trainer needs (generate returns only tokens here).
The two alternate call by call; the first `--warmup` calls of each are dropped, medians over the
rest. Generated tokens per second = samples x L / wall time. Writes
benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import speed_setup as S
import torch

from e3rl.rollout.hf import HFEngine

OUT = Path(__file__).parent / "results" / "throughput.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7, help="measured calls of each")
    ap.add_argument("--warmup", type=int, default=2, help="calls of each dropped first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="4.3M", choices=list(S.SIZES))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        ap.error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats}, {args.warmup}")

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    bench = S.build(args.size)
    model, tok = bench.model.eval(), bench.tokenizer
    prompts = bench.prompt_ids[: args.prompts]
    counts = [args.samples] * len(prompts)
    engine = HFEngine(model, tok, generator=torch.Generator().manual_seed(0))
    engine.eos_ids = []  # forced length, as min_new_tokens does for generate
    rows = torch.tensor([p for p in prompts for _ in range(args.samples)])
    mask = torch.ones_like(rows)
    n = rows.shape[0]

    def run_engine(length: int) -> int:
        return engine.generate(prompts, counts, 1.0, length).num_tokens

    @torch.no_grad()
    def run_generate(length: int) -> int:
        out = model.generate(
            input_ids=rows,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=length,
            min_new_tokens=length,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        return int(out.shape[1] - rows.shape[1]) * n

    results = {}
    for length in args.lengths:
        times: dict[str, list[float]] = {"engine": [], "generate": []}
        for _ in range(args.warmup + args.repeats):
            for name, fn in (("engine", run_engine), ("generate", run_generate)):
                t = time.perf_counter()
                tokens = fn(length)
                times[name].append(time.perf_counter() - t)
                if tokens != n * length:
                    raise RuntimeError(f"{name} generated {tokens} tokens, not {n * length}")
        res: dict = {"max_new_tokens": length, "tokens_per_call": n * length}
        for name, ts in times.items():
            med = statistics.median(ts[args.warmup :])
            res[name] = {"seconds": ts, "median_s": med, "tokens_per_s": n * length / med}
        res["engine_over_generate_throughput"] = (
            res["engine"]["tokens_per_s"] / res["generate"]["tokens_per_s"]
        )
        results[str(length)] = res
        print(
            f"{length:>4} new tokens x {n}: engine {res['engine']['tokens_per_s']:.0f} tok/s, "
            f"generate {res['generate']['tokens_per_s']:.0f} tok/s "
            f"(engine/generate {res['engine_over_generate_throughput']:.2f})"
        )
    out = {
        "benchmark": "throughput",
        "environment": S.environment(args.threads),
        "model": {"size": args.size, "parameters": bench.params, "vocab_size": len(tok)},
        "work": {
            "prompts": len(prompts),
            "samples_per_prompt": args.samples,
            "prompt_tokens": bench.prompt_tokens,
            "temperature": 1.0,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "alternation": "one engine call, then one generate call, repeated",
        },
        "results": results,
        "wall_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
