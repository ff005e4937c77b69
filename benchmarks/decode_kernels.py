"""The two kernel choices behind lean decoding, timed against what they replace.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/decode_kernels.py

1. A decode-step projection, [64, in] x weight: `F.linear(x, W)` (transformers' nn.Linear, W stored
   [out, in]) against `x @ Wt` with Wt stored [in, out] contiguous (`lean_decode._t`), for the
   shapes of the 4.3M benchmark model (q/k/v fused, gate/up fused, down, o) and SmolLM2's.
2. Drawing one token per row from probabilities [64, V]: `torch.multinomial(p, 1)` against
   `hf.sample_tokens` (inverse CDF, one uniform per row), at the benchmark's V = 384 and
   SmolLM2's V = 49,152.

Each pair alternates call by call; medians of `--repeats` calls after 10 warm-up calls.
Writes benchmarks/results/decode_kernels.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from e3rl.rollout.hf import sample_tokens

OUT = Path(__file__).parent / "results" / "decode_kernels.json"
ROWS = 64
# (name, in, out): the 4.3M model (hidden 256, MLP 1024) and SmolLM2-135M (hidden 576, MLP 1536)
PROJECTIONS = [
    ("4.3M q/k/v fused", 256, 768),
    ("4.3M gate/up fused", 256, 2048),
    ("4.3M down", 1024, 256),
    ("SmolLM2 q/k/v fused", 576, 960),
    ("SmolLM2 gate/up fused", 576, 3072),
    ("SmolLM2 down", 1536, 576),
]


def _pair(a, b, repeats: int) -> tuple[float, float]:
    ta, tb = [], []
    for i in range(10 + repeats):
        for fn, ts in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            if i >= 10:
                ts.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict = {"projections": [], "sampling": []}
    for name, d_in, d_out in PROJECTIONS:
        x, w = torch.randn(ROWS, d_in), torch.randn(d_out, d_in)
        wt = w.t().contiguous()
        lin, pre = _pair(lambda x=x, w=w: F.linear(x, w), lambda x=x, wt=wt: x @ wt, args.repeats)
        flops = 2 * ROWS * d_in * d_out
        row = {
            "shape": name,
            "linear_us": lin * 1e6,
            "pretransposed_us": pre * 1e6,
            "linear_gflops": flops / lin / 1e9,
            "pretransposed_gflops": flops / pre / 1e9,
            "speedup": lin / pre,
        }
        results["projections"].append(row)
        print(
            f"{name:>22}: F.linear {lin * 1e6:7.1f} us, x @ Wt {pre * 1e6:7.1f} us ({lin / pre:.2f}x)"
        )
    gen = torch.Generator().manual_seed(0)
    for vocab in (384, 49152):
        probs = torch.softmax(torch.randn(ROWS, vocab) * 3, -1)
        repeats = args.repeats if vocab < 10_000 else max(args.repeats // 10, 5)
        multi, inv = _pair(
            lambda p=probs: torch.multinomial(p, 1, generator=gen),
            lambda p=probs: sample_tokens(p, gen),
            repeats,
        )
        results["sampling"].append(
            {
                "vocab": vocab,
                "multinomial_us": multi * 1e6,
                "inverse_cdf_us": inv * 1e6,
                "speedup": multi / inv,
            }
        )
        print(
            f"V = {vocab:>6}: multinomial {multi * 1e6:8.1f} us, inverse CDF {inv * 1e6:7.1f} us "
            f"({multi / inv:.1f}x)"
        )
    out = {
        "benchmark": "decode_kernels",
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": ROWS,
        "repeats": args.repeats,
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
