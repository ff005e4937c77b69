"""`e3rl train | demo | eval | report | config`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from e3rl.config import ConfigError
from e3rl.config_io import split_config_args

# Exit codes (README, "Exit codes"). A graceful stop (SIGINT/SIGTERM) is not success: a job
# scheduler must not take a pre-empted run for a finished one. 75 is sysexits' EX_TEMPFAIL,
# "try again later", which is what a stopped run is: resumable with --resume.
EXIT_OK = 0
EXIT_RUN_FAILED = 1  # the input was fine; the run went wrong (non-finite updates, rewards)
EXIT_BAD_INPUT = 2  # config, data, model, checkpoint or run directory rejected
EXIT_STOPPED = 75
EXIT_ABORTED = 130  # a second signal: stopped at once, without a checkpoint of that step


def _train(args: argparse.Namespace) -> int:
    from e3rl.config_io import load_config
    from e3rl.trainer import train

    config, overrides = split_config_args(args.args)
    cfg = load_config(config, overrides)
    summary = train(
        cfg,
        resume=args.resume or args.resume_force,
        resume_force=args.resume_force,
        quiet=args.quiet,
    )
    print(json.dumps(summary, indent=2))
    # A graceful stop is not success: a scheduler must see a resumable, unfinished run.
    return EXIT_STOPPED if summary.get("stopped") else EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from e3rl.demo import run_demo

    summary = run_demo(
        Path(args.output_dir), args.args, quiet=args.quiet, baseline=not args.no_baseline
    )
    return EXIT_STOPPED if summary.get("stopped") else EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    from e3rl.eval_cli import run_eval

    return run_eval(args)


def _report(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401  (an extra, like the gguf packages)
    except ImportError:
        return _fail(
            ModuleNotFoundError(
                "e3rl report draws its figures with matplotlib, which is not installed: "
                "pip install 'e3rl[report]'"
            ),
            EXIT_BAD_INPUT,
        )
    from e3rl.report import make_report

    out = make_report([Path(d) for d in args.run_dirs], Path(args.out))
    print(f"report written to {out}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from e3rl.config_io import describe

    for key, tp, default, doc in describe():
        print(f"{key:34s} {tp:28s} {default!r:18s} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e3rl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train with RL from a YAML config and key=value overrides")
    t.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG.yaml] KEY=VALUE",
        help="a YAML config file (defaults if omitted) and dotted overrides, e.g. rollout.n=8",
    )
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.add_argument(
        "--resume-force", action="store_true", help="resume even if the config changed (logged)"
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=_train)

    d = sub.add_parser(
        "demo", help="e3rl's method vs uniform GRPO on a tiny model and arithmetic, before/after"
    )
    d.add_argument("--output-dir", default="runs/demo")
    d.add_argument(
        "--no-baseline", action="store_true", help="the method only, not uniform GRPO beside it"
    )
    d.add_argument("args", nargs="*", metavar="KEY=VALUE", help="overrides of the demo config")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=_demo)

    e = sub.add_parser("eval", help="greedy accuracy, mean@n, pass@k, entropy, diversity")
    e.add_argument(
        "model",
        help="model directory, checkpoint, .gguf file, pkg:PACKAGE/FILE (a file inside an "
        "installed Python package), or 'task' for the task's warm-started base model",
    )
    e.add_argument("--data", default="arith:val", help="data file or TASK:SPLIT")
    e.add_argument("--config", default=None, help="YAML config for task/model settings")
    e.add_argument("--n", type=int, default=16, help="samples per prompt (0 = greedy only)")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--k", default="1,2,4,8,16", help="comma-separated k for pass@k")
    e.add_argument("--max-new-tokens", type=int, default=None)
    e.add_argument("--limit", type=int, default=0, help="evaluate at most this many prompts")
    e.add_argument("--reward", default=None, help="reward function (default: the config's)")
    e.add_argument(
        "--output-dir",
        default=None,
        help="where eval.json goes (default: the model directory; for a file such as a .gguf, "
        "TRAINER.OUTPUT_DIR/eval-NAME)",
    )
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("args", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    e.set_defaults(fn=_eval)

    r = sub.add_parser("report", help="figures and a Markdown report from run directories")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--out", default="runs/report")
    r.set_defaults(fn=_report)

    c = sub.add_parser("config", help="print every configuration key with its default")
    c.set_defaults(fn=_config)
    return p


def _fail(error: Exception, code: int) -> int:
    """One line on stderr (set E3RL_DEBUG=1 for the traceback instead)."""
    print(f"e3rl: error: {' '.join(str(error).split())}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may come before and after flags: argparse leaves the later ones over.
    args, extra = parser.parse_known_args(argv)
    bad = [
        a
        for a in extra
        if a.startswith("-")
        or not hasattr(args, "args")
        or ("=" not in a and not a.endswith((".yaml", ".yml")))
    ]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.args = [*args.args, *extra]
    from transformers.utils import logging as hf_logging

    from e3rl.checkpoint import CheckpointError
    from e3rl.data import DataError
    from e3rl.guards import TrainingError
    from e3rl.models import ModelError
    from e3rl.resume import ResumeError

    hf_logging.disable_progress_bar()  # one bar per load and per checkpoint save: noise
    if os.environ.get("E3RL_DEBUG", "") not in ("", "0"):
        return args.fn(args)  # developers: the full traceback of any error
    try:
        return args.fn(args)
    except TrainingError as e:  # the input was fine; the run went wrong
        return _fail(e, EXIT_RUN_FAILED)
    except (ConfigError, DataError, ModelError, ResumeError, CheckpointError, OSError) as e:
        return _fail(e, EXIT_BAD_INPUT)
    except ValueError as e:  # allocator / reward / controller settings rejected at start-up
        return _fail(e, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print("e3rl: interrupted", file=sys.stderr)
        return EXIT_ABORTED


if __name__ == "__main__":
    sys.exit(main())
