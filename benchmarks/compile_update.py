"""`trainer.compile`: the policy update with torch.compile against the eager one, same rollouts.

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/compile_update.py

The 4.3M Qwen2 of trl_speed.py, 8 prompts x 8 completions, one optimizer step per update. Each
round samples rollouts of a different length (so the compiled code must cope with changing
shapes, as in training), then runs the update once through `torch.compile(model)` and once
through the model itself, alternating; both update the same weights, so the two see the same
model state up to one step. The first compiled call (compilation included) is reported apart;
medians over the other rounds. Compilation takes 30-45 s on a cold inductor cache and a few
seconds when the cache (in /tmp) is warm. Writes benchmarks/results/compile_update.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import speed_setup as S
import torch

from e3rl.algos import group_advantages
from e3rl.config import AlgoConfig
from e3rl.optim import make_optimizer
from e3rl.rollout.hf import HFEngine
from e3rl.update import policy_update

OUT = Path(__file__).parent / "results" / "compile_update.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 50, 40, 64, 33, 57, 20, 61, 64])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bench = S.build("4.3M", num_prompts=64)
    model = bench.model  # no timing hooks here: they would break the compiled graph
    engine = HFEngine(model, bench.tokenizer, generator=torch.Generator().manual_seed(0))
    engine.eos_ids = []  # exactly `length` tokens per sample
    optimizer = make_optimizer(model.parameters(), lr=S.LR, betas=(0.9, 0.999))
    algo = AlgoConfig(micro_batch_size=64)
    compiled = torch.compile(model)
    rounds = []
    for i, length in enumerate(args.lengths):
        prompts = [bench.prompt_ids[(8 * i + k) % 64] for k in range(8)]
        r = engine.generate(prompts, [8] * 8, 1.0, length)
        rewards = torch.tensor([S.dense_reward(t) for t in r.texts])
        adv = group_advantages(rewards, r.prompt_index)
        row = {"length": length, "trained_tokens": r.num_tokens}
        for name, m in (("compiled", compiled), ("eager", model)):
            t = time.perf_counter()
            policy_update(m, optimizer, r, adv, 1.0, algo, grad_clip=1.0)
            row[f"{name}_s"] = time.perf_counter() - t
        rounds.append(row)
        print(
            f"{length:>3} tokens: compiled {row['compiled_s']:.3f} s, eager {row['eager_s']:.3f} s",
            flush=True,
        )
    rest = rounds[1:]
    out = {
        "benchmark": "compile_update",
        "environment": S.environment(args.threads),
        "first_compiled_call_s": rounds[0]["compiled_s"],
        "median_compiled_s": statistics.median(r["compiled_s"] for r in rest),
        "median_eager_s": statistics.median(r["eager_s"] for r in rest),
        "median_ratio_compiled_over_eager": statistics.median(
            r["compiled_s"] / r["eager_s"] for r in rest
        ),
        "rounds": rounds,
    }
    print(
        f"first compiled call {out['first_compiled_call_s']:.1f} s; then compiled/eager "
        f"{out['median_ratio_compiled_over_eager']:.2f} (median over {len(rest)} rounds)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
