"""TRL's rollouts and e3rl's from one model: the same distribution of whole responses?

    .venv-bench/bin/python benchmarks/trl_rollout_check.py --model BASE_DIR --model FINAL_DIR

`trl_parity_step.py` compares TRL's next-token distribution at one context; this compares whole
responses on the paths the 300-step runs take: TRL's `GRPOTrainer._generate_and_score_completions`
(transformers' `generate` with the GenerationConfig TRL builds, left-padded batches of 16 prompts
x 8) and e3rl's `HFEngine` (lean decoder, shared prompts, inverse-CDF sampler; and the same engine
drawing with `torch.multinomial`). Each path draws `--samples` responses a prompt at T = 1 with
36 new tokens on the demo's 300 validation prompts, scored by the demo's checker.

Per path: accuracy overall and per level, mean response length (EOS included), share truncated,
share of direct answers (`#n`). Between TRL and each e3rl path: the accuracy and length
differences with 95 % bootstrap intervals over prompts, and a per-prompt homogeneity test: the
sum over prompts of z^2 = (c_a - c_b)^2 / (2 n p (1 - p)) (c: correct counts of n, p pooled),
which under one distribution is chi-square with as many degrees of freedom as prompts with
0 < p < 1. Writes benchmarks/results/trl_parity/rollout_check.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "results" / "trl_parity" / "rollout_check.json"
PROMPTS_PER_CALL = 16  # TRL's per-step batch in the runs: 16 prompts x 8


def trl_rollouts(model_dir: Path, rows: list[dict], samples: int, seed: int) -> list[dict]:
    """`samples` responses a row through TRL's own generation step (8 at a time per prompt)."""
    import trl_parity as P
    from trl_parity_step import make_trainer

    trainer, tok, _, score = make_trainer(model_dir, seed)
    trainer.model.train()  # as in TRL's training loop (no dropout in these models)
    torch.manual_seed(seed)  # transformers' sampling draws from torch's global generator
    out = _empty(rows)
    for rep in range(samples // P.N):
        for start in range(0, len(rows), PROMPTS_PER_CALL):
            block = rows[start : start + PROMPTS_PER_CALL]
            batch = [r for r in block for _ in range(P.N)]
            inputs = trainer._generate_and_score_completions(batch)
            comp, mask = inputs["completion_ids"], inputs["completion_mask"].bool()
            texts = tok.batch_decode(
                [c[m].tolist() for c, m in zip(comp, mask, strict=True)], skip_special_tokens=True
            )
            ended = (comp == tok.eos_token_id) & mask
            for j, (text, r) in enumerate(zip(texts, batch, strict=True)):
                o = out[start + j // P.N]
                _tally(
                    o, float(score(text, r["answer"])), int(mask[j].sum()), not ended[j].any(), text
                )
        print(f"TRL {model_dir.name}: {rep + 1} x 8 of {samples} a prompt", flush=True)
    return out


def e3rl_rollouts(
    model_dir: Path, rows: list[dict], samples: int, seed: int, multinomial: bool
) -> list[dict]:
    import trl_parity as P

    import e3rl.rollout.hf as H
    from e3rl.data import encode_prompts, load_source
    from e3rl.rewards import resolve_reward

    model, tok = P.load_model(model_dir)
    val = encode_prompts(load_source("arith:val", P.demo_task())[: len(rows)], tok, 512)
    score = resolve_reward("auto", "arith")
    default = H.sample_tokens
    if multinomial:
        H.sample_tokens = P.multinomial_sample
    try:
        engine = H.HFEngine(model, tok, generator=torch.Generator().manual_seed(seed))
        r = engine.generate(val.token_ids, [samples] * len(rows), 1.0, P.MAX_NEW)
    finally:
        H.sample_tokens = default
    out = _empty(rows)
    lengths = r.response_mask.sum(-1).tolist()
    for k, i in enumerate(r.prompt_index.tolist()):
        text = r.texts[k]
        _tally(
            out[i],
            float(score(text, rows[i]["answer"])),
            int(lengths[k]),
            bool(r.truncated[k]),
            text,
        )
    return out


def _empty(rows: list) -> list[dict]:
    return [{"correct": 0, "length": 0, "truncated": 0, "direct": 0} for _ in rows]


def _tally(o: dict, reward: float, length: int, truncated: bool, text: str) -> None:
    from trl_parity_report import response_form

    o["correct"] += int(reward > 0.5)
    o["length"] += length
    o["truncated"] += int(truncated)
    o["direct"] += int(response_form(text) == "direct")


def describe(counts: list[dict], levels: list[int], n: int) -> dict:
    c = np.array([x["correct"] for x in counts]) / n
    by_level = {
        str(lv): float(c[[i for i, x in enumerate(levels) if x == lv]].mean())
        for lv in sorted(set(levels))
    }
    return {
        "accuracy": float(c.mean()),
        "by_level": by_level,
        "mean_length": float(sum(x["length"] for x in counts) / (n * len(counts))),
        "truncated_share": float(sum(x["truncated"] for x in counts) / (n * len(counts))),
        "direct_share": float(sum(x["direct"] for x in counts) / (n * len(counts))),
    }


def compare(a: list[dict], b: list[dict], n: int, seed: int = 0) -> dict:
    """a - b: accuracy and length with bootstrap intervals over prompts; per-prompt homogeneity."""
    ca = np.array([x["correct"] for x in a], float)
    cb = np.array([x["correct"] for x in b], float)
    la = np.array([x["length"] for x in a], float) / n
    lb = np.array([x["length"] for x in b], float) / n
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ca), size=(10_000, len(ca)))

    def interval(d: np.ndarray) -> list[float]:
        return [float(v) for v in np.percentile(d[idx].mean(axis=1), [2.5, 97.5])]

    dacc, dlen = (ca - cb) / n, la - lb
    p = (ca + cb) / (2 * n)
    live = (p > 0) & (p < 1)
    z2 = (ca - cb)[live] ** 2 / (2 * n * p[live] * (1 - p[live]))
    df = int(live.sum())
    chi2 = float(z2.sum())
    return {
        "accuracy_diff": float(dacc.mean()),
        "accuracy_diff_ci95": interval(dacc),
        "length_diff": float(dlen.mean()),
        "length_diff_ci95": interval(dlen),
        "homogeneity_chi2": chi2,
        "homogeneity_df": df,
        # normal approximation of chi-square(df): |z| > 2 would say the distributions differ
        "homogeneity_z": (chi2 - df) / math.sqrt(2 * df) if df else None,
    }


def check_model(model_dir: Path, samples: int, seed: int, limit: int | None = None) -> dict:
    import trl_parity as P

    from e3rl.data import load_source, render

    tok = P.load_model(model_dir)[1]
    val = load_source("arith:val", P.demo_task())[:limit]
    rows = [{"prompt": render(p, tok), "answer": p.answer} for p in val]
    levels = [int(p.meta.get("level", 0)) for p in val]
    paths, seconds = {}, {}
    for name, fn in (
        ("trl", lambda: trl_rollouts(model_dir, rows, samples, seed)),
        ("e3rl", lambda: e3rl_rollouts(model_dir, rows, samples, seed, False)),
        ("e3rl_multinomial", lambda: e3rl_rollouts(model_dir, rows, samples, seed, True)),
    ):
        t0 = time.perf_counter()
        paths[name] = fn()
        seconds[name] = time.perf_counter() - t0
        print(f"{model_dir}: {name} done in {seconds[name]:.0f} s", flush=True)
    return {
        "model": str(model_dir),
        "samples_per_prompt": samples,
        "prompts": len(rows),
        "paths": {k: describe(v, levels, samples) for k, v in paths.items()},
        "trl_minus": {k: compare(paths["trl"], v, samples) for k, v in paths.items() if k != "trl"},
        "e3rl_minus_multinomial": compare(paths["e3rl"], paths["e3rl_multinomial"], samples),
        "seconds": seconds,  # not a benchmark: other runs shared the cores
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True, help="HF model dir")
    ap.add_argument("--samples", type=int, default=64, help="responses a prompt (multiple of 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, help="the first L validation prompts (a smoke test)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if a.samples % 8:
        raise SystemExit(
            f"--samples must be a multiple of 8 (TRL draws 8 a prompt), not {a.samples}"
        )
    torch.set_num_threads(a.threads)
    res = {"models": [check_model(m, a.samples, a.seed, a.limit) for m in a.model]}
    a.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
