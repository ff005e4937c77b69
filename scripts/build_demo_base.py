"""Build the demo's base model, check it against the demo's band, and ship it.

    python scripts/build_demo_base.py                 # build + check, write src/e3rl/bases/<name>/
    python scripts/build_demo_base.py --out DIR       # build + check, write DIR/<name>/ (not shipped)
    python scripts/build_demo_base.py --check         # re-check the shipped base, build nothing
    python scripts/build_demo_base.py --out DIR model.warm_start.steps=3000   # a variant

The base is what `e3rl demo` starts from: a tokenizer trained on the task's text and a supervised
warm start (configs/demo.yaml: model.*, task.*). Shipping it removes the first run's warm start
and, above all, its floating-point variance: a warm start is a chaotic computation and another
CPU (AVX2 vs AVX-512 kernels, thread counts) may land it in another behaviour. The check
(e3rl.demo.BAND, docs/demo.md) is what the demo needs from a base; a build that fails it is not
written (exit status 1). Run it with ATEN_CPU_CAPABILITY=avx2 and the default to see that the
design, not one machine's float path, produces a base inside the band.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from e3rl.demo import BAND, demo_config, environment
from e3rl.warmstart import (
    SHIPPED_BASES,
    band_measures,
    base_name,
    build_base,
    check_base,
    probe_base,
    save_base,
)


def report_check(report: dict) -> list[str]:
    problems = check_base(report, BAND)
    m = band_measures(report, BAND)
    print(
        f"base check on levels {list(BAND.levels)}: greedy works out {m['worked_share']:.3f} "
        f"(band {BAND.worked_share}), mean P(worked) {m['p_worked']:.3f} (band {BAND.p_worked}), "
        f"worked {m['forced_worked_accuracy']:.3f} vs direct {m['forced_direct_accuracy']:.3f} "
        f"accurate (advantage >= {BAND.min_worked_advantage}); greedy accuracy on all levels "
        f"{m['greedy_accuracy']:.3f} (band {BAND.greedy_accuracy})"
    )
    print("PASS" if not problems else "FAIL: " + "; ".join(problems))
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=SHIPPED_BASES, help="where the base goes")
    p.add_argument("--check", action="store_true", help="check the shipped base only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "overrides", nargs="*", help="KEY=VALUE changes to the demo config (experiments)"
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = demo_config(Path("unused"), args.overrides)
    seed = cfg.model.warm_start.seed
    name = base_name(cfg.model, cfg.task, seed)
    if args.check:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = SHIPPED_BASES / name
        if not (path / "config.json").is_file():
            print(f"no shipped base {path}: the demo config changed? build one", file=sys.stderr)
            return 1
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return 1 if report_check(probe_base(model, tokenizer, cfg.task)) else 0

    t0 = time.perf_counter()
    model, tokenizer = build_base(cfg.model, cfg.task, seed)
    built = time.perf_counter() - t0
    report = probe_base(model, tokenizer, cfg.task)
    problems = report_check(report)
    check = {
        "measures": band_measures(report, BAND),
        "problems": problems,
        "band": {k: v for k, v in BAND.__dict__.items()},
        "built_on": environment(),
        "build_seconds": round(built, 1),
        "probe": report,
    }
    target = args.out / name
    if problems:
        failed = args.out / f"{name}.failed-check.json"
        failed.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(json.dumps(check, indent=2))
        print(f"not written: {target} (check record: {failed})")
        return 1
    if target.exists():
        import shutil

        shutil.rmtree(target)
    save_base(model, tokenizer, target)
    (target / "base_check.json").write_text(json.dumps(check, indent=2))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
