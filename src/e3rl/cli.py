"""`e3rl train | demo | eval | report | config`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from e3rl.config import ConfigError


def _train(args: argparse.Namespace) -> int:
    from e3rl.config import load_config
    from e3rl.trainer import train

    cfg = load_config(args.config, args.overrides)
    summary = train(
        cfg,
        resume=args.resume or args.resume_force,
        resume_force=args.resume_force,
        quiet=args.quiet,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from e3rl.demo import run_demo

    run_demo(Path(args.output_dir), args.overrides, quiet=args.quiet)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from e3rl.eval_cli import run_eval

    return run_eval(args)


def _report(args: argparse.Namespace) -> int:
    from e3rl.report import make_report

    out = make_report([Path(d) for d in args.run_dirs], Path(args.out))
    print(f"report written to {out}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from e3rl.config import describe

    for key, tp, default, doc in describe():
        print(f"{key:34s} {tp:28s} {default!r:18s} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e3rl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train with RL from a YAML config and key=value overrides")
    t.add_argument("config", nargs="?", help="YAML config file (defaults if omitted)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.n=8")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.add_argument(
        "--resume-force", action="store_true", help="resume even if the config changed (logged)"
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=_train)

    d = sub.add_parser("demo", help="warm-started tiny model, RL on arithmetic, before/after")
    d.add_argument("--output-dir", default="runs/demo")
    d.add_argument("overrides", nargs="*", help="dotted overrides of the demo config")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=_demo)

    e = sub.add_parser("eval", help="greedy accuracy, mean@n, pass@k, entropy, diversity")
    e.add_argument(
        "model",
        help="model directory, checkpoint, .gguf file, or 'task' for the "
        "task's warm-started base model",
    )
    e.add_argument("--data", default="arith:val", help="data file or TASK:SPLIT")
    e.add_argument("--config", default=None, help="YAML config for task/model settings")
    e.add_argument("--n", type=int, default=16, help="samples per prompt (0 = greedy only)")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--k", default="1,2,4,8,16", help="comma-separated k for pass@k")
    e.add_argument("--max-new-tokens", type=int, default=None)
    e.add_argument("--limit", type=int, default=0, help="evaluate at most this many prompts")
    e.add_argument("--reward", default=None, help="reward function (default: the config's)")
    e.add_argument("--output-dir", default=None, help="where eval.json goes (default: model dir)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("overrides", nargs="*", help="dotted config overrides")
    e.set_defaults(fn=_eval)

    r = sub.add_parser("report", help="figures and a Markdown report from run directories")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--out", default="runs/report")
    r.set_defaults(fn=_report)

    c = sub.add_parser("config", help="print every configuration key with its default")
    c.set_defaults(fn=_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from e3rl.checkpoint import CheckpointError
    from e3rl.data import DataError
    from e3rl.models import ModelError
    from e3rl.trainer import ResumeError

    try:
        return args.fn(args)
    except (ConfigError, DataError, ModelError, ResumeError, CheckpointError, OSError) as e:
        print(f"e3rl: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # allocator / reward / controller settings rejected at start-up
        print(f"e3rl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("e3rl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
