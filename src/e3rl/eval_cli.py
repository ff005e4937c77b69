"""`e3rl eval MODEL --data SOURCE --n 16 --k 1,2,4,8,16`: a table on the console, eval.json on disk."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from e3rl.config import ConfigError
from e3rl.config_io import load_config, split_config_args


def _parse_ks(text: str, n: int) -> list[int]:
    try:
        ks = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise ConfigError(f"--k {text!r} is invalid: expected comma-separated integers") from None
    if n and any(k < 1 or k > n for k in ks):
        raise ConfigError(f"--k {text!r} is invalid: every k must be in [1, --n={n}]")
    return ks if n else []


def run_eval(args: argparse.Namespace) -> int:
    from e3rl.data import encode_prompts, load_source
    from e3rl.evaluate import evaluate
    from e3rl.models import load_policy, load_pretrained, resolve_path
    from e3rl.runtime import make_engine, make_reward, resolve_device

    config, overrides = split_config_args(args.args)
    cfg = load_config(args.config or config, overrides)
    if args.n < 0:
        raise ConfigError(f"--n {args.n} is invalid: expected an integer >= 0")
    ks = _parse_ks(args.k, args.n)
    torch.manual_seed(args.seed)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if args.model == "task":
        model, tok = load_policy(cfg.model, cfg.task, cfg.trainer.seed)
        out_dir = Path(args.output_dir or Path(cfg.trainer.output_dir) / "eval-base")
    else:
        model, tok = load_pretrained(args.model, cfg.model.gguf_file)
        path = resolve_path(args.model)
        # A model directory gets its eval.json; a file (e.g. a .gguf inside site-packages) does not.
        default = path if path.is_dir() else Path(cfg.trainer.output_dir) / f"eval-{path.stem}"
        out_dir = Path(args.output_dir or default)
    device = resolve_device(cfg.trainer.device)
    model.to(device).eval()
    prompts = load_source(args.data, cfg.task)
    if args.limit:
        prompts = prompts[: args.limit]
    enc = encode_prompts(
        prompts,
        tok,
        cfg.data.max_prompt_tokens,
        cfg.data.on_too_long,
        cfg.data.system_prompt,
        source=args.data,
    )
    generator = torch.Generator(device=device).manual_seed(args.seed)
    # The hf engine whatever rollout.engine says: eval samples through transformers only.
    engine = make_engine(cfg, model, tok, generator, name="hf")
    reward = make_reward(cfg, args.data, args.reward)
    try:
        with Progress(console=Console(stderr=True), transient=True) as bar:
            job = bar.add_task("evaluating", total=len(enc.prompts))
            res = evaluate(
                engine,
                enc.prompts,
                enc.token_ids,
                reward,
                args.max_new_tokens or cfg.rollout.max_new_tokens,
                n=args.n,
                temperature=args.temperature,
                ks=ks,
                success_threshold=cfg.budget.success_threshold,
                progress=lambda k: bar.advance(job, k),
            )
    finally:  # an isolated reward runs in a worker process: never leave it behind
        reward.close()
    res.update(
        {
            "model": args.model,
            "data": args.data,
            "dropped_prompts": enc.dropped,
            "reward_errors": reward.errors,
            "reward_timeouts": reward.timeouts,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(res, indent=2))
    _print_table(res, ks, Console())
    print(f"eval.json written to {out_dir / 'eval.json'}")
    return 0


def _print_table(res: dict, ks: list[int], console: Console) -> None:
    table = Table(title=f"{res['model']} on {res['data']}")
    cols = ["group", "prompts", "greedy acc"]
    if res["n"]:
        cols += ["mean@n", *[f"pass@{k}" for k in ks], "entropy", "distinct"]
    for c in cols:
        table.add_column(c, justify="right")

    def row(name: str, r: dict, count: int) -> list[str]:
        cells = [name, str(count), f"{r.get('greedy_accuracy', r.get('correct', 0)):.3f}"]
        if res["n"]:
            pk = r.get("pass_at_k") or {str(k): r.get(f"pass@{k}", 0) for k in ks}
            cells += [
                f"{r.get('mean_at_n', 0):.3f}",
                *[f"{pk[str(k)]:.3f}" for k in ks],
                f"{r['entropy']:.3f}" if "entropy" in r else "-",
                f"{r.get('distinct_answers', 0):.2f}",
            ]
        return cells

    table.add_row(*row("all", res, res["num_prompts"]))
    for key, groups in res["by_group"].items():
        for g, r in groups.items():
            table.add_row(*row(f"{key}={g}", r, int(r["count"])))
    console.print(table)
