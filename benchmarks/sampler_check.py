"""Do e3rl's inverse-CDF sampler and torch.multinomial draw the same tokens, at a trained model's
contexts? (The TRL parity runs, docs/benchmarks.md, left the sampler as the lead difference.)

    PYTHONPATH=src .venv/bin/python benchmarks/sampler_check.py --model RUN/final --rounds 6000

Contexts: every prefix of the model's greedy response to the first 200 demo validation prompts.
At each, `rounds` draws from the softmax by each sampler (separate generators); reported: draws
off the most likely token, and draws by probability band and by vocabulary quarter (the inverse
CDF accumulates float32 sums along the vocabulary), each against its expectation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from e3rl.data import load_source
from e3rl.demo import demo_config
from e3rl.models import load_pretrained
from e3rl.rollout.hf import sample_tokens


@torch.no_grad()
def contexts(model, tok, prompts: list[str], depth: int = 12) -> torch.Tensor:
    out = []
    for q in prompts:
        ids = tok(q, add_special_tokens=False, return_tensors="pt").input_ids
        for _ in range(depth):
            p = torch.softmax(model(ids).logits[0, -1].float(), -1)
            out.append(p)
            nxt = p.argmax().view(1, 1)
            if nxt.item() == tok.eos_token_id:
                break
            ids = torch.cat([ids, nxt], 1)
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=6000)
    ap.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/trl_parity/sampler_check.json")
    )
    a = ap.parse_args()
    torch.set_num_threads(2)
    model, tok = load_pretrained(a.model)
    val = load_source("arith:val", demo_config(Path("_unused")).task)
    P = contexts(model, tok, [p.text for p in val][:200])
    C, V = P.shape
    rows = torch.arange(C)
    counts = {"inverse_cdf": torch.zeros(C, V), "multinomial": torch.zeros(C, V)}
    gens = {
        "inverse_cdf": torch.Generator().manual_seed(1),
        "multinomial": torch.Generator().manual_seed(2),
    }
    for _ in range(a.rounds):
        counts["inverse_cdf"][rows, sample_tokens(P, gens["inverse_cdf"])] += 1
        counts["multinomial"][
            rows, torch.multinomial(P, 1, generator=gens["multinomial"]).squeeze(-1)
        ] += 1
    expected = P * a.rounds
    top = P.argmax(-1)
    q = 1 - P[rows, top]
    bands = {"p<1e-3": P < 1e-3, "1e-3<=p<0.1": (P >= 1e-3) & (P < 0.1)}
    res = {
        "model": str(a.model), "contexts": C, "vocab": V, "rounds": a.rounds,
        "off_top": {
            "expected": float(q.sum() * a.rounds),
            "sd": float((a.rounds * q * (1 - q)).sum().sqrt()),
            **{k: float(a.rounds * C - c[rows, top].sum()) for k, c in counts.items()},
        },
        "bands": {
            b: {"expected": float(expected[m].sum()), **{k: float(c[m].sum()) for k, c in counts.items()}}
            for b, m in bands.items()
        },
        "vocab_quarters": [
            {"range": [lo, hi], "expected": float(expected[:, lo:hi].sum()),
             **{k: float(c[:, lo:hi].sum()) for k, c in counts.items()}}
            for lo, hi in [(i * V // 4, (i + 1) * V // 4) for i in range(4)]
        ],
    }  # fmt: skip
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
