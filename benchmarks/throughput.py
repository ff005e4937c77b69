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
`engine_hf_decode` is the engine with `lean_decode=False`: its decode steps run through the model's
own forward (the path before lean decoding, and the one LoRA models take). The three alternate
call by call; the first `--warmup` calls of each are dropped, medians over the
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
    plain = HFEngine(model, tok, generator=torch.Generator().manual_seed(0), lean_decode=False)
    plain.eos_ids = []
    rows = torch.tensor([p for p in prompts for _ in range(args.samples)])
    mask = torch.ones_like(rows)
    n = rows.shape[0]

    def run_engine(length: int) -> int:
        return engine.generate(prompts, counts, 1.0, length).num_tokens

    def run_plain(length: int) -> int:
        return plain.generate(prompts, counts, 1.0, length).num_tokens

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
        contestants = (
            ("engine", run_engine),
            ("engine_hf_decode", run_plain),
            ("generate", run_generate),
        )
        times: dict[str, list[float]] = {name: [] for name, _ in contestants}
        for _ in range(args.warmup + args.repeats):
            for name, fn in contestants:
                t = time.perf_counter()
                tokens = fn(length)
                times[name].append(time.perf_counter() - t)
                if tokens != n * length:
                    raise RuntimeError(f"{name} generated {tokens} tokens, not {n * length}")
        res: dict = {"max_new_tokens": length, "tokens_per_call": n * length}
        for name, ts in times.items():
            med = statistics.median(ts[args.warmup :])
            res[name] = {"seconds": ts, "median_s": med, "tokens_per_s": n * length / med}
        tps = {name: r["tokens_per_s"] for name, r in res.items() if isinstance(r, dict)}
        res["engine_over_generate_throughput"] = tps["engine"] / tps["generate"]
        res["engine_over_hf_decode_throughput"] = tps["engine"] / tps["engine_hf_decode"]
        results[str(length)] = res
        print(
            f"{length:>4} new tokens x {n}: engine {tps['engine']:.0f} tok/s, "
            f"engine (transformers decode) {tps['engine_hf_decode']:.0f} tok/s, "
            f"generate {tps['generate']:.0f} tok/s "
            f"(engine/generate {res['engine_over_generate_throughput']:.2f}, "
            f"lean/transformers decode {res['engine_over_hf_decode_throughput']:.2f})"
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
            "alternation": "one call each of engine, engine_hf_decode, generate, repeated",
        },
        "results": results,
        "wall_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
