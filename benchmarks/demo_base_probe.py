"""Probe a warm-started demo base: how often greedy works a problem out, and how well each form does.

    python benchmarks/demo_base_probe.py [KEY=VALUE ...] --out probe.json

Builds (or loads from E3RL_CACHE) the base of the demo config with the overrides, then reports on
the validation prompts, per level: greedy accuracy, the share of greedy answers that are worked,
the mean probability of a worked first token, and the accuracy of forced-worked and forced-direct
answers. Used to design the demo's base (docs/demo.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from e3rl.demo import demo_config  # noqa: E402
from e3rl.warmstart import probe_base  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("overrides", nargs="*")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = demo_config(Path("/tmp/unused"), args.overrides)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    from e3rl.models import load_policy

    t0 = time.perf_counter()
    model, tok = load_policy(cfg.model, cfg.task, cfg.trainer.seed)
    built = time.perf_counter() - t0
    report = probe_base(model, tok, cfg.task)
    report.update(
        {
            "overrides": args.overrides,
            "build_seconds": built,
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
        }
    )
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "levels"}))
    for lv, r in report["levels"].items():
        print(lv, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})


if __name__ == "__main__":
    main()
