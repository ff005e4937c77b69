"""Loading time and rollout speed of SmolLM2-135M-Instruct (GGUF from PyPI) with the HF engine.

    OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/smollm_rollout.py

8 arith prompts in chat form x 4 samples each, up to 64 new tokens, temperature 1, 2 torch
threads; 3 timed repeats (after one warm-up), median reported. Responses stop at the chat
template's end-of-turn token, so the token count varies between repeats: tokens/s is the number
of generated tokens (prefill excluded from the count, included in the time) over the wall time.
CPU seconds per token are recorded too: on a shared machine they move less than the wall time.
The engine's default decode path (lean, `rollout.lean_decode`) and the model's own forward
(`lean_decode=False`) alternate call by call from the same seed, so both draw the same samples;
the top-level figures are the lean path's, `transformers_decode` holds the other's.
Writes benchmarks/results/smollm_rollout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from e3rl.config import TaskConfig
from e3rl.data import encode_prompts, task_prompts
from e3rl.models import load_pretrained, smollm2_path
from e3rl.rewards.checkers import arith_reward
from e3rl.rollout.hf import HFEngine

OUT = Path(__file__).parent / "results" / "smollm_rollout.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model, tok = load_pretrained(smollm2_path(), dtype=args.dtype)
    load_s = time.perf_counter() - t0

    task = TaskConfig(levels=[1, 2, 3, 4, 5, 6], train_size=60, val_size=args.prompts)
    prompts = task_prompts(task, "val")[: args.prompts]
    enc = encode_prompts(prompts, tok, max_prompt_tokens=512)
    engine = HFEngine(model, tok, generator=torch.Generator())
    plain = HFEngine(model, tok, generator=torch.Generator(), lean_decode=False)
    counts = [args.samples] * len(enc.token_ids)

    def once(eng: HFEngine, seed: int) -> dict:
        eng.generator.manual_seed(seed)
        t, c = time.perf_counter(), time.process_time()
        r = eng.generate(enc.token_ids, counts, 1.0, args.max_new_tokens)
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        answers = [enc.prompts[i].answer for i in r.prompt_index.tolist()]
        return {
            "seconds": dt,
            "tokens": r.num_tokens,
            "tokens_per_s": r.num_tokens / dt,
            "cpu_seconds": cpu,
            "stopped_at_eos": float((~r.truncated).float().mean()),
            "reward_mean": sum(map(arith_reward, r.texts, answers)) / len(r),
            "sample": r.texts[0],
        }

    once(engine, 0), once(plain, 0)  # warm-up: first-call allocations and kernel selection
    runs, plain_runs = [], []
    for rep in range(1, args.repeats + 1):
        runs.append(once(engine, rep))
        plain_runs.append(once(plain, rep))
    med = statistics.median(r["tokens_per_s"] for r in runs)
    plain_med = statistics.median(r["tokens_per_s"] for r in plain_runs)
    result = {
        "model": str(smollm2_path().name),
        "dtype": args.dtype,
        "parameters": sum(p.numel() for p in model.parameters()),
        "eos_ids": engine.eos_ids,
        "eos_tokens": tok.convert_ids_to_tokens(engine.eos_ids),
        "load_seconds": load_s,
        "prompts": len(enc.token_ids),
        "samples_per_prompt": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "prompt_tokens_mean": statistics.mean(map(len, enc.token_ids)),
        "threads": args.threads,
        "repeats": runs,
        "median_tokens_per_s": med,
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "median_cpu_seconds_per_token": statistics.median(
            r["cpu_seconds"] / r["tokens"] for r in runs
        ),
        "decode_path": engine.decode_path,
        "transformers_decode": {
            "repeats": plain_runs,
            "median_tokens_per_s": plain_med,
            "median_seconds": statistics.median(r["seconds"] for r in plain_runs),
        },
        "lean_over_transformers_decode": med / plain_med,
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "niceness": os.nice(0),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    shown = {k: v for k, v in result.items() if k not in ("repeats", "transformers_decode")}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
