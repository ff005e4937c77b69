"""Learning parity with TRL: TRL 1.16's GRPOTrainer and e3rl's uniform GRPO from one base model.

    make bench-trl-venv                                   # once: .venv-bench with TRL
    .venv-bench/bin/python benchmarks/trl_parity.py --base BASE_DIR --jobs 2
    .venv-bench/bin/python benchmarks/trl_parity.py --base BASE_DIR --summary-only
    # today's demo base (the shipped one); the records under results/ start from issue 14's
    # base (greedy 0.403), which this same command writes when run from commit ebb578d's code
    # (docs/benchmarks.md "Parity with TRL"):
    .venv-bench/bin/python benchmarks/trl_parity.py --build-base BASE_DIR

Every run starts from the same base model directory (`--base`: any HF directory with its
tokenizer; keep it fixed across arms) and trains on the demo's task with the demo's settings:
16 prompts x 8 completions per step, `--steps` steps (300), AdamW lr 5e-5 with betas (0.9, 0.99)
and no weight decay, 10 linear warm-up steps then cosine decay, gradient norm clipped at 1, 36
new tokens at temperature 1, no KL, token-mean loss over the step's 128 completions, advantages
(r - mean) / std over each group of 8, float32, `--threads` torch threads (1). One optimizer step
per step in both (TRL: per-device batch 128, generation batch 128, gradient accumulation 1,
num_iterations 1).

Arms (`ARMS`): `trl` (GRPOTrainer, its defaults otherwise: loss_type dapo = token-mean over the
batch, scale_rewards group, top_k 0, top_p 1), `e3rl` (the demo config, uniform budget) and
`e3rl-trlsched` (e3rl with TRL's schedule and advantage epsilon: warm-up from lr 0,
algo.adv_eps 1e-4), the two known differences switched off, `e3rl-lr0` (the warm-up from lr 0
alone: the declared 12-seed test of e3rl's default), and `e3rl-multinomial` (e3rl drawing
its rollouts with torch.multinomial, as transformers' `generate` does, instead of its inverse-CDF
sampler); the swap arms `e3rl-generate` and `trl-e3rl-engine`; and the replay arms
`e3rl-replay*`, e3rl's loop trained on the batches the `trl` run of the same seed recorded
(`batches.json` and parameter snapshots in its run directory; run `trl` first), whose records add
the final parameters' distance to TRL's and a distance trace by step; and `e3rl-trlorder`, e3rl
taking each step's prompts in the order TRL's sampler gives the same seed (`trl_prompt_order`)
and drawing its own rollouts.

Each final model gets the same evaluation with e3rl's evaluator on the demo's 300 held-out
prompts: greedy accuracy (overall and per level) and mean@8 at temperature 1 (8 samples per
prompt, the sampler seeded by the run's seed, identical across arms). One JSON per (arm, seed) in
`--out` (default benchmarks/results/trl_parity/), with per-prompt greedy correctness for paired
comparison; a run whose JSON exists is skipped, so an interrupted suite resumes. `summary.md`
holds the per-seed table, per-level accuracy, and paired differences between arms with 95 %
bootstrap intervals (prompts resampled, the same draw for every seed; seeds averaged).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from trl_parity_report import summarize

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "trl_parity"
WORK = ROOT / "runs" / "trl_parity"

STEPS = 300
LR = 5e-5
WARMUP = 10
BETAS = (0.9, 0.99)
N = 8
PROMPTS = 16
MAX_NEW = 36
EVAL_N = 8
# steps after which a trl run saves its parameters (runs/, for the replay arms' distance trace)
SNAPSHOT_STEPS = (1, 2, 3, 5, 10, 20, 50, 100, 200)

# e3rl arms: overrides on top of the demo config (model.path and the seed are set per run).
ARMS: dict[str, list[str]] = {
    "trl": [],  # not an e3rl arm: GRPOTrainer
    "e3rl": [],
    "e3rl-trlsched": ["algo.adv_eps=1e-4", "optim.warmup_from_zero=true"],
    # the first warm-up step alone (lr 0 as in transformers and verl, against e3rl's lr / 10):
    # the declared 12-seed test of whether e3rl's default costs accuracy (docs/benchmarks.md)
    "e3rl-lr0": ["optim.warmup_from_zero=true"],
    # e3rl with TRL's sampler: torch.multinomial instead of the inverse-CDF draw (same
    # distribution, another random stream): the one code difference left in the rollouts
    "e3rl-multinomial": ["+multinomial"],
    # e3rl's loop with its rollouts drawn as TRL draws them: transformers' generate on the
    # left-padded batch, TRL's GenerationConfig (benchmarks/generate_engine.py)
    "e3rl-generate": ["+generate"],
    # the converse swap: TRL's trainer drawing its rollouts with e3rl's HFEngine
    "trl-e3rl-engine": [],  # not an e3rl arm: GRPOTrainer
    # e3rl's loop on the batches the `trl` run of the same seed drew (its prompts, its
    # completions: benchmarks/replay_engine.py), with e3rl's defaults; and with TRL's warm-up and
    # advantage epsilon, so that what is left of a difference is the update's code
    "e3rl-replay": ["+replay"],
    "e3rl-replay-trlsched": ["algo.adv_eps=1e-4", "optim.warmup_from_zero=true", "+replay"],
    # each of the two differences alone
    "e3rl-replay-lr0": ["optim.warmup_from_zero=true", "+replay"],
    "e3rl-replay-eps": ["algo.adv_eps=1e-4", "+replay"],
    # e3rl drawing its own rollouts for the prompts TRL's RepeatSampler gives the same seed,
    # step by step: the data order is TRL's, the sampling draws are e3rl's
    "e3rl-trlorder": ["+trlorder"],
}


# ----------------------------------------------------------------------------- base model


def build_base(target: Path) -> None:
    """Writes the demo's warm-started base (trainer.seed 0, as `e3rl demo` builds it) to `target`."""
    import torch

    from e3rl.demo import demo_config
    from e3rl.models import load_policy

    cfg = demo_config(target / "_unused")
    torch.set_num_threads(cfg.trainer.threads)
    model, tok = load_policy(cfg.model, cfg.task, cfg.trainer.seed)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    print(f"base model written to {target}")


def demo_task():
    from e3rl.demo import demo_config

    return demo_config(Path("_unused")).task


def load_model(path: Path):
    from e3rl.models import load_pretrained

    model, tok = load_pretrained(path)
    return model, tok


# ----------------------------------------------------------------------------- evaluation


def evaluate_model(model_dir: Path, seed: int, threads: int) -> dict:
    """Greedy accuracy (overall, per level, per prompt) and mean@8 at T = 1 on the demo's val set."""
    import torch

    from e3rl.data import encode_prompts, load_source
    from e3rl.evaluate import evaluate
    from e3rl.rewards import RewardRunner, resolve_reward
    from e3rl.rollout.hf import HFEngine

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir)
    task = demo_task()
    val = encode_prompts(load_source("arith:val", task), tok, 512)
    engine = HFEngine(model, tok, generator=torch.Generator().manual_seed(10_000 + seed))
    reward = RewardRunner(resolve_reward("auto", "arith"), 5.0)
    res = evaluate(engine, val.prompts, val.token_ids, reward, MAX_NEW, n=EVAL_N, temperature=1.0)
    return {
        "greedy_accuracy": res["greedy_accuracy"],
        "mean_at_8": res["mean_at_n"],
        "by_level": {k: v["correct"] for k, v in res["by_group"].get("level", {}).items()},
        "items": [
            {
                "id": i["id"],
                "level": i.get("level"),
                "correct": bool(i["correct"]),
                "response": i["response"],
                "mean_at_n": i.get("mean_at_n"),
            }
            for i in res["items"]
        ],
    }


# ----------------------------------------------------------------------------- the arms


def run_e3rl(arm: str, base: Path, seed: int, steps: int, threads: int, run_dir: Path) -> dict:
    from e3rl.demo import demo_config
    from e3rl.trainer import train

    flags = [o for o in ARMS[arm] if o.startswith("+")]
    overrides = [o for o in ARMS[arm] if not o.startswith("+")]
    cfg = demo_config(
        run_dir,
        [
            f"model.path={base}",
            "model.warm_start.steps=0",
            f"trainer.seed={seed}",
            f"trainer.total_steps={steps}",
            f"trainer.threads={threads}",
            "trainer.eval_every=0",
            "trainer.save_every=0",
            "data.val=null",  # evaluated once after training, as the TRL arm
            *overrides,
        ],
    )
    if "+multinomial" in flags:
        _patch_multinomial_sampler()
    if "+generate" in flags:
        _patch_generate_engine()
    if "+replay" in flags:
        _patch_replay(run_dir.parent.parent / "trl" / f"seed{seed}", cfg)
    if "+trlorder" in flags:
        _patch_trl_order(cfg, seed, steps)
    summary = train(cfg, quiet=True)
    curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        "final_dir": summary["final_dir"],
        "curve": [
            {
                k: r.get(k)
                for k in ("step", "reward_mean", "entropy", "grad_norm", "clip_frac", "lr")
            }
            for r in curve
            if "step" in r
        ],
    }


def multinomial_sample(probs, generator=None):
    """`e3rl.rollout.hf.sample_tokens` as transformers' `generate` draws: torch.multinomial."""
    import torch

    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _patch_multinomial_sampler() -> None:
    """Rollouts drawn by torch.multinomial (as transformers' `generate` draws), for this arm only."""
    import e3rl.rollout.hf as H

    H.sample_tokens = multinomial_sample


def _patch_generate_engine() -> None:
    """Training rollouts from `generate_engine.GenerateEngine`, for this arm only."""
    from generate_engine import GenerateEngine

    import e3rl.train.run as T  # build_run looks make_engine up here

    T.make_engine = lambda cfg, model, tokenizer, generator, name=None: GenerateEngine(
        model, tokenizer
    )


def _patch_replay(trl_dir: Path, cfg) -> None:
    """Prompts and rollouts of e3rl's loop taken from the TRL run in `trl_dir` (its
    batches.json), for the replay arms only."""
    from replay_engine import ReplayEngine, load_batches

    import e3rl.train.run as T  # build_run looks Batches and make_engine up here
    from e3rl.data import encode_prompts, load_source

    path = trl_dir / "batches.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the `trl` arm of this seed first")
    batches = load_batches(path)
    _, tok = load_model(Path(cfg.model.path))
    train = encode_prompts(load_source(cfg.data.train, cfg.task), tok, cfg.data.max_prompt_tokens)
    index = {}
    for i, ids in enumerate(train.token_ids):
        index.setdefault(tuple(ids), i)
    step_prompts = [[index[tuple(p)] for p in b["prompts"]] for b in batches]

    snaps = {int(f.stem.removeprefix("step")): f for f in (trl_dir / "params").glob("step*.pt")}
    trace = Path(cfg.trainer.output_dir) / "distance_to_trl.json"
    T.Batches = batches_of(step_prompts, len(train.token_ids))
    T.make_engine = lambda cfg, model, tokenizer, generator, name=None: ReplayEngine(
        model, tokenizer, batches, snaps, trace
    )


def trl_prompt_order(
    num_prompts: int, steps: int, seed: int, prompts: int = PROMPTS, n: int = N
) -> list[list[int]]:
    """The dataset indices of the `prompts` prompts of each of GRPOTrainer's first `steps` steps,
    in its order, as its `_get_train_sampler` builds the sampler for trl_parity's settings (one
    generation batch a step, num_iterations 1): RepeatSampler, one permutation an epoch from one
    generator seeded by `seed`, incomplete batches dropped."""
    from trl.trainer.utils import RepeatSampler

    sampler = RepeatSampler(range(num_prompts), mini_repeat_count=n, batch_size=prompts, seed=seed)
    steps_out: list[list[int]] = []
    while len(steps_out) < steps:  # each pass over the sampler is one epoch, as the Trainer's
        flat = list(sampler)[::n]
        steps_out += [flat[i : i + prompts] for i in range(0, len(flat), prompts)]
    return steps_out[:steps]


def _patch_trl_order(cfg, seed: int, steps: int) -> None:
    """e3rl's loop takes its prompts in the order TRL's sampler gives seed `seed`, for the
    `e3rl-trlorder` arm only (the epochs stay e3rl's: 250 steps of 16 over 4,000 prompts in both)."""
    import e3rl.train.run as T  # build_run looks Batches up here
    from e3rl.data import load_source

    num_prompts = len(load_source(cfg.data.train, cfg.task))  # TRL's dataset: all of them
    T.Batches = batches_of(trl_prompt_order(num_prompts, steps, seed), num_prompts)


def batches_of(step_prompts: list[list[int]], num_prompts: int):
    """e3rl's `Batches` (its epochs and positions) handing out `step_prompts[k]` at step k: the
    prompts another trainer took, for the arms that train e3rl on them."""
    import e3rl.train.run as T

    class Given(T.Batches):
        def next(self):
            if self.num_prompts != num_prompts:
                raise RuntimeError(
                    f"e3rl trains on {self.num_prompts} prompts, the given order on {num_prompts}"
                )
            new_epoch = self.position >= self.per_epoch
            if new_epoch:
                self.epoch, self.position = self.epoch + 1, 0
            k = self.epoch * self.per_epoch + self.position
            self.position += 1
            return step_prompts[k], new_epoch

    return Given


def param_distance(a_dir: Path, b_dir: Path) -> dict:
    """How far two saved models' parameters are apart: the relative L2 distance over all of
    them, and the largest absolute difference of any one."""
    from replay_engine import l2_norm

    a, _ = load_model(a_dir)
    b, _ = load_model(b_dir)
    pa, pb = a.state_dict(), b.state_dict()
    if pa.keys() != pb.keys():
        raise RuntimeError(f"{a_dir} and {b_dir} hold different parameters")
    diff = l2_norm(pa[k] - pb[k] for k in pa)
    norm = l2_norm(pb.values())
    worst = max(float((pa[k] - pb[k]).abs().max()) for k in pa)
    return {"relative_l2": diff / norm, "max_abs": worst, "of": str(b_dir)}


def _record_trl_batches(batches: list[dict]) -> None:
    """Every GRPOTrainer generation call's prompts and completions appended to `batches`."""
    from replay_engine import record_batch
    from trl import GRPOTrainer

    inner = GRPOTrainer._generate_single_turn

    def recording(self, prompt_ids, *args, **kw):
        out = inner(self, prompt_ids, *args, **kw)
        record_batch(batches, prompt_ids, out[0])
        return out

    GRPOTrainer._generate_single_turn = recording


def _patch_trl_generation(seed: int) -> None:
    """GRPOTrainer's transformers generation replaced by e3rl's HFEngine (its default sampler,
    seeded by the run's seed), for the `trl-e3rl-engine` arm only."""
    import torch
    from trl import GRPOTrainer

    from e3rl.rollout.hf import HFEngine

    sampler = torch.Generator().manual_seed(seed)

    def single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **_):
        # TRL's RepeatSampler puts the generations of one prompt next to each other
        uniq: list[list[int]] = []
        counts: list[int] = []
        for p in prompt_ids:
            if uniq and uniq[-1] == list(p):
                counts[-1] += 1
            else:
                uniq.append(list(p))
                counts.append(1)
        engine = HFEngine(self.model, self._tokenizer, micro_batch_size=256, generator=sampler)
        r = engine.generate(uniq, counts, self.temperature, self.max_completion_length)
        lengths = r.response_mask.sum(-1).long().tolist()
        w = r.prompt_width
        return [r.input_ids[s, w : w + n].tolist() for s, n in enumerate(lengths)], None

    GRPOTrainer._generate_single_turn = single_turn


def run_trl(
    base: Path, seed: int, steps: int, threads: int, run_dir: Path, e3rl_engine: bool = False
) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from e3rl.data import load_source, render
    from e3rl.rewards import resolve_reward

    torch.set_num_threads(threads)
    if e3rl_engine:
        _patch_trl_generation(seed)
    batches: list[dict] = []  # what the replay arms train on
    _record_trl_batches(batches)
    model, tok = load_model(base)
    train_set = load_source("arith:train", demo_task())
    texts = [render(p, tok) for p in train_set]
    # TRL tokenises with add_special_tokens=True; e3rl without. They must give the same ids.
    for t in texts[:50]:
        if tok(t)["input_ids"] != tok(t, add_special_tokens=False)["input_ids"]:
            raise RuntimeError(f"TRL would tokenise {t!r} differently from e3rl")
    score = resolve_reward("auto", "arith")

    def reward(completions, answer, **_):
        return [float(score(c, a)) for c, a in zip(completions, answer, strict=True)]

    curve: list[dict] = []

    class Snapshots(TrainerCallback):  # the replay arms trace their distance to these
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in SNAPSHOT_STEPS:
                (run_dir / "params").mkdir(exist_ok=True)
                sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
                torch.save(sd, run_dir / "params" / f"step{state.global_step}.pt")

    class Curve(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                curve.append(
                    {
                        "step": state.global_step,
                        "reward_mean": logs.get("reward"),
                        "entropy": logs.get("entropy"),
                        "grad_norm": logs.get("grad_norm"),
                        "clip_frac": logs.get("clip_ratio/region_mean"),
                        "lr": logs.get("learning_rate"),
                    }
                )

    batch = PROMPTS * N
    cfg = GRPOConfig(
        output_dir=str(run_dir / "trl"),
        max_steps=steps,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=N,
        num_iterations=1,
        max_completion_length=MAX_NEW,
        temperature=1.0,
        beta=0.0,
        loss_type="dapo",  # token-mean over the step's completions (TRL's default)
        scale_rewards="group",
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=WARMUP,
        adam_beta1=BETAS[0],
        adam_beta2=BETAS[1],
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=seed,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=cfg,
        train_dataset=Dataset.from_dict({"prompt": texts, "answer": [p.answer for p in train_set]}),
        processing_class=tok,
        callbacks=[Curve(), Snapshots()],
    )
    trainer.train()
    (run_dir / "batches.json").write_text(json.dumps(batches))
    final = run_dir / "final"
    trainer.model.save_pretrained(final)
    tok.save_pretrained(final)
    return {"final_dir": str(final), "curve": curve}


def run_one(arm: str, base: Path, seed: int, args) -> Path:
    out = args.out / arm / f"seed{seed}.json"
    run_dir = args.work / arm / f"seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted run starts over
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    if arm in ("trl", "trl-e3rl-engine"):
        res = run_trl(base, seed, args.steps, args.threads, run_dir, arm == "trl-e3rl-engine")
    else:
        res = run_e3rl(arm, base, seed, args.steps, args.threads, run_dir)
    train_s = time.perf_counter() - t0
    ev = evaluate_model(Path(res["final_dir"]), seed, args.threads)
    if arm.startswith("e3rl-replay"):
        ev["param_distance_to_trl"] = param_distance(
            Path(res["final_dir"]), args.work / "trl" / f"seed{seed}" / "final"
        )
        trace = run_dir / "distance_to_trl.json"
        ev["distance_trace"] = json.loads(trace.read_text()) if trace.is_file() else []
    record = {
        "arm": arm,
        "seed": seed,
        "steps": args.steps,
        "threads": args.threads,
        "base": str(base),
        "train_seconds": train_s,
        **ev,
        "curve": res["curve"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="base model directory (fixed for all arms)")
    ap.add_argument("--build-base", type=Path, help="write the demo's base model here and exit")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own process)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--work", type=Path, default=WORK, help="run directories (final models)")
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--one", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.build_base:
        build_base(args.build_base)
        return
    if args.base is None or not (args.base / "config.json").is_file():
        ap.error(f"--base {args.base} is not a model directory (no config.json)")
    args.base = args.base.resolve()
    if args.one:
        run_one(args.one[0], args.base, int(args.one[1]), args)
        return

    base_json = args.out / "base.json"
    if not args.summary_only:
        # Seed by seed, arms side by side: with --jobs = number of arms, the runs of one seed
        # share the machine's load.
        todo = [
            (a, s)
            for s in args.seeds
            for a in args.arms
            if not (args.out / a / f"seed{s}.json").exists()
        ]

        def launch(job):
            a, s = job
            cmd = [sys.executable, __file__, "--one", a, str(s), "--base", str(args.base)]
            cmd += ["--steps", str(args.steps), "--threads", str(args.threads)]
            cmd += ["--out", str(args.out), "--work", str(args.work)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
            t = time.perf_counter()
            rc = subprocess.run(cmd, env=env).returncode
            print(f"{a} seed {s}: rc {rc}, {time.perf_counter() - t:.0f} s", flush=True)
            return rc

        with ThreadPoolExecutor(args.jobs) as pool:
            rcs = list(pool.map(launch, todo))
        if not base_json.exists():
            ev = evaluate_model(args.base, 0, args.threads)
            base_json.write_text(json.dumps({"base": str(args.base), **ev}, indent=1))
        if any(rcs):
            print(f"{sum(1 for r in rcs if r)} runs failed")
    base_eval = json.loads(base_json.read_text()) if base_json.exists() else None
    text = summarize(args.out, base_eval, list(ARMS))
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
