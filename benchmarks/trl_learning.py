"""Side by side on the demo task: TRL's GRPOTrainer against E3GRPOTrainer (TRL with e3rl).

    make test-trl                                   # once: .venv-bench with TRL and e3rl
    E3RL_CACHE=/tmp/e3rl-cache OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/trl_learning.py \
        --steps 150 --seeds 0 1
    # check that it runs (a minute, numbers meaningless):
    .venv-bench/bin/python benchmarks/trl_learning.py --steps 2 --seeds 0 --val 16 \
        --out /tmp/trl_learning.json

Both arms start from the demo's warm-started tiny Llama (`e3rl demo`'s base model, cached under
$E3RL_CACHE) and train on the first 800 of the demo's training prompts (50 rounds an epoch, so
every prompt comes back and difficulty tracking has something to track), 16 prompts x 8
completions per step, 36 new tokens, the demo's learning rate and warm-up, no KL. Only the
trainer class differs: the e3rl arm gets the `e3rl=` mapping of docs/trl.md (value allocator
n_min=0 / n_max=16, entropy-steered temperature after 10 warm-up rounds, length bias). Greedy
accuracy on the demo's 300 held-out prompts before and after. Writes
benchmarks/results/trl_learning.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "trl_learning.json"
E3RL = {
    "budget": {"allocator": "value", "n_min": 0, "n_max": 16},
    "temperature_control": "entropy",
    "temperature": {"warmup_steps": 10},
    "length_bias": {"mu": 1e-3, "threshold": 0.1},
}


def load_demo():
    """(model, tokenizer, train prompts, val prompts) of `e3rl demo`, rendered as it renders them."""
    from e3rl.data import render, task_prompts
    from e3rl.demo import demo_config
    from e3rl.models import load_policy

    cfg = demo_config(Path(tempfile.mkdtemp(prefix="trl-learning-")))
    model, tok = load_policy(cfg.model, cfg.task, cfg.trainer.seed)
    tok.padding_side = "left"

    def rows(split):
        return [(render(p, tok), p.answer) for p in task_prompts(cfg.task, split)]

    return cfg, model, tok, rows("train"), rows("val")


@torch.no_grad()
def greedy_accuracy(model, tok, rows, max_new_tokens: int, chunk: int = 100) -> float:
    from e3rl.tasks.arith import score

    model.eval()
    right = 0
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        enc = tok([p for p, _ in part], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id
        )
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        right += sum(score(t, a) >= 1.0 for t, (_, a) in zip(texts, part, strict=True))
    return right / len(rows)


def reward(completions, answer, **_):
    from e3rl.tasks.arith import score

    return [score(c, a) for c, a in zip(completions, answer, strict=True)]


def run_arm(arm: str, seed: int, base, tok, train, val, args) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from e3rl.integrations.trl import E3GRPOTrainer

    model = copy.deepcopy(base)
    ds = Dataset.from_dict({"prompt": [p for p, _ in train], "answer": [a for _, a in train]})
    with tempfile.TemporaryDirectory(prefix=f"trl-learning-{arm}-") as tmp:
        cfg = GRPOConfig(
            output_dir=tmp,
            max_steps=args.steps,
            per_device_train_batch_size=args.prompts * 8,
            num_generations=8,
            max_completion_length=36,
            temperature=1.0,
            learning_rate=5e-5,
            warmup_steps=10,
            lr_scheduler_type="cosine",
            beta=0.0,
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=seed,
        )
        kw = dict(
            model=model, processing_class=tok, reward_funcs=[reward], train_dataset=ds, args=cfg
        )
        trainer = E3GRPOTrainer(**kw, e3rl=E3RL) if arm == "e3rl" else GRPOTrainer(**kw)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
        history = [h for h in trainer.state.log_history if "loss" in h]
    keep = (
        "reward",
        "e3rl/temperature",
        "e3rl/entropy",
        "entropy",
        "e3rl/alloc/max",
        "e3rl/groups/all_correct_frac",
        "e3rl/groups/all_wrong_frac",
        "frac_reward_zero_std",
    )
    return {
        "arm": arm,
        "seed": seed,
        "final_val_accuracy": greedy_accuracy(trainer.model, tok, val, 36),
        "train_wall_s": wall,
        "mean_reward_last_20": statistics.mean(h["reward"] for h in history[-20:]),
        "history": [{k: h[k] for k in keep if k in h} for h in history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (x 8 completions)")
    ap.add_argument("--train", type=int, default=800, help="first N demo training prompts")
    ap.add_argument("--val", type=int, default=300, help="first N held-out prompts")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import trl

    _, base, tok, train, val = load_demo()
    train, val = train[: args.train], val[: args.val]
    base_acc = greedy_accuracy(base, tok, val, 36)
    print(f"base model: greedy accuracy {base_acc:.3f} on {len(val)} held-out prompts", flush=True)
    runs = []
    for seed in args.seeds:
        for arm in ("trl", "e3rl"):  # alternating, so machine load hits both alike
            r = run_arm(arm, seed, base, tok, train, val, args)
            runs.append(r)
            print(
                f"{arm:>4} seed {seed}: {base_acc:.3f} -> {r['final_val_accuracy']:.3f}, "
                f"train {r['train_wall_s']:.0f} s",
                flush=True,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"partial": True, "runs": runs}, indent=1))
    summary = {
        arm: {
            "final_val_accuracy_mean": statistics.mean(
                r["final_val_accuracy"] for r in runs if r["arm"] == arm
            ),
            "final_val_accuracy": [r["final_val_accuracy"] for r in runs if r["arm"] == arm],
        }
        for arm in ("trl", "e3rl")
    }
    out = {
        "benchmark": "trl_learning",
        "trl": trl.__version__,
        "threads": args.threads,
        "steps": args.steps,
        "prompts_per_step": args.prompts,
        "completions_per_prompt": 8,
        "train_prompts": len(train),
        "val_prompts": len(val),
        "e3rl": E3RL,
        "base_val_accuracy": base_acc,
        "summary": summary,
        "runs": runs,
    }
    args.out.write_text(json.dumps(out, indent=1))
    for arm, s in summary.items():
        print(f"{arm:>4}: final greedy accuracy {s['final_val_accuracy']} (base {base_acc:.3f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
