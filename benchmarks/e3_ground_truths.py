"""Does math-verify accept every ground truth of the paper's data against itself?

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/e3_ground_truths.py

For every distinct ground truth of ../shared/data/e3/{train_data.parquet, valid_data.parquet,
test.json}, the response `\\boxed{GT}` is checked in two ways:

- math-verify alone, as `math_reward` calls it: the gold is parsed from `\\boxed{GT}` (else
  from GT as it is), the response is parsed, and `verify(gold, pred)` must hold. Failures are
  listed as `unparsed` (math-verify extracts nothing from the gold or the response) or
  `rejected` (both parse, but verify says they differ);
- `math_reward` itself (math-verify plus its fallbacks), which is what training uses: it must
  score 1.0 on every ground truth.

Writes benchmarks/results/e3_ground_truths.json (per file: rows, distinct ground truths, the
failures with their counts of rows) and prints a summary with the wall time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("E3RL_DATA", REPO.parent / "shared" / "data" / "e3"))
FILES = ("train_data.parquet", "valid_data.parquet", "test.json")
OUT = Path(__file__).parent / "results" / "e3_ground_truths.json"


def check_math_verify(answer: str) -> str | None:
    """None if math-verify alone accepts `\\boxed{answer}` as `answer`; else why not."""
    from math_verify import parse, verify

    boxed = f"\\boxed{{{answer}}}"
    try:
        gold = parse(boxed) or parse(answer)
        pred = parse(boxed)
        if not gold or not pred:
            return "unparsed"
        return None if verify(gold, pred) else "rejected"
    except Exception as e:  # math-verify's own timeouts raise; so may sympy
        return f"error: {type(e).__name__}: {e}"[:200]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"{args.data} does not exist: nothing to check", file=sys.stderr)
        return 1

    from e3rl.data import load_file
    from e3rl.rewards.checkers import math_reward

    t_start = time.perf_counter()
    verdicts: dict[str, str | None] = {}
    rewards: dict[str, float] = {}
    seconds_mv = seconds_reward = 0.0
    report: dict[str, dict] = {}
    for name in FILES:
        prompts = load_file(args.data / name)
        counts = collections.Counter(p.answer for p in prompts)
        for answer in counts:
            if answer not in verdicts:
                t = time.perf_counter()
                verdicts[answer] = check_math_verify(answer)
                seconds_mv += time.perf_counter() - t
                t = time.perf_counter()
                rewards[answer] = math_reward(f"\\boxed{{{answer}}}", answer)
                seconds_reward += time.perf_counter() - t
        failures = [
            {"answer": a, "rows": counts[a], "math_verify": verdicts[a], "math_reward": rewards[a]}
            for a in counts
            if verdicts[a] is not None or rewards[a] != 1.0
        ]
        report[name] = {
            "rows": len(prompts),
            "skipped_rows_empty_answer": len(prompts.skipped),
            "distinct_answers": len(counts),
            "math_verify_unparsed": sum(1 for f in failures if f["math_verify"] == "unparsed"),
            "math_verify_rejected": sum(1 for f in failures if f["math_verify"] == "rejected"),
            "math_verify_errors": sum(
                1 for f in failures if (f["math_verify"] or "").startswith("error")
            ),
            "math_verify_failed_rows": sum(f["rows"] for f in failures if f["math_verify"]),
            "math_reward_not_1": sum(1 for f in failures if f["math_reward"] != 1.0),
            "failures": failures,
        }
    result = {
        "data": str(args.data),
        "distinct_answers_checked": len(verdicts),
        "seconds_total": time.perf_counter() - t_start,
        "seconds_math_verify": seconds_mv,
        "seconds_math_reward": seconds_reward,
        "files": report,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    for name, r in report.items():
        print(
            f"{name}: {r['rows']} rows, {r['distinct_answers']} distinct answers; math-verify "
            f"unparsed {r['math_verify_unparsed']}, rejected {r['math_verify_rejected']}, "
            f"errors {r['math_verify_errors']} ({r['math_verify_failed_rows']} rows); "
            f"math_reward != 1: {r['math_reward_not_1']}"
        )
    print(
        f"{len(verdicts)} distinct answers in {result['seconds_total']:.1f} s "
        f"(math-verify {seconds_mv:.1f} s, math_reward {seconds_reward:.1f} s); "
        f"written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
