"""Step time of e3rl against TRL's GRPOTrainer: same model, same work, one invocation, alternating.

    make bench-trl-venv                                          # once: .venv-bench with TRL
    OMP_NUM_THREADS=2 .venv-bench/bin/python benchmarks/trl_speed.py
    # check that it runs (seconds, numbers meaningless):
    .venv-bench/bin/python benchmarks/trl_speed.py --steps 2 --warmup 1 --threads 1 \
        --out /tmp/trl_speed.json

The work of one step, identical in both: the 4.3M-parameter Qwen2 of the SPEC (hidden 256, 4
layers, 4 heads, MLP 1024, vocabulary 384, tied embeddings: 4,297,984 parameters, same initial
weights), 8 prompts of the same token length x 8 completions, exactly `L` new tokens each (TRL:
`min_new_tokens = max_new_tokens`; e3rl: no stop token), temperature 1, no KL (beta 0: no reference
model in either), fp32, no gradient checkpointing, one optimizer step on one batch of 64
completions (TRL: per-device batch 64, generation batch 64, gradient accumulation 1,
num_iterations 1, so it skips its old-log-prob forward; e3rl: one micro-batch, old log-probs taken
from sampling). Both use AdamW and clip the gradient norm at 1.

TRL drives its own loop (`trainer.train()`); a callback at the end of each TRL step runs one e3rl
step (its own persistent model and optimizer), so the two alternate step by step. A TRL step is
timed from the end of the previous e3rl step to the end of this TRL step: it includes TRL's batch
fetch and logging. The first `--warmup` steps of each are dropped; medians over the rest.

The compute floor of a configuration is (2 P G + 6 P T) / R: P parameters, G generated and T
trained tokens per step, R the median fp32 rate of torch.mm on 1024 x 1024 matrices measured in
the same run with the same threads. Writes benchmarks/results/trl_speed.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import speed_setup as S
import torch

OUT = Path(__file__).parent / "results" / "trl_speed.json"


def _make_trainer_class():
    from trl import GRPOTrainer

    class TimedGRPOTrainer(GRPOTrainer):
        """GRPOTrainer unchanged, with the time of its generate call and its token counts
        recorded (the counts prove both trainers did the same work)."""

        phases: dict

        def _generate(self, prompts):
            t = time.perf_counter()
            out = super()._generate(prompts)
            self.phases["generate_s"] = self.phases.get("generate_s", 0.0) + time.perf_counter() - t
            return out

        def _generate_and_score_completions(self, inputs):
            t = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            dt = time.perf_counter() - t
            self.phases["generate_and_score_s"] = self.phases.get("generate_and_score_s", 0) + dt
            return out

        def _compute_loss(self, model, inputs):
            self.phases["trained_tokens"] = int(inputs["completion_mask"].sum())
            self.phases["prompt_tokens"] = int(inputs["prompt_mask"].sum())
            return super()._compute_loss(model, inputs)

    return TimedGRPOTrainer


def run_length(bench: S.Bench, length: int, args) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig

    batch = args.prompts * args.completions
    e3 = S.E3RLStep(bench, args.prompts, args.completions, length, seed=args.seed)
    generated: list[int] = []

    def reward(completions, completion_ids, **_):
        generated.append(sum(len(c) for c in completion_ids))
        return [S.dense_reward(c) for c in completions]

    trl_rows: list[dict] = []
    timer_box: dict = {}

    class Alternate(TrainerCallback):
        """Closes each TRL step's timing, then runs one e3rl step outside of it."""

        def on_train_begin(self, a, state, control, **kw):
            self.t_exit = time.perf_counter()

        def on_pre_optimizer_step(self, a, state, control, **kw):
            self.t_opt = time.perf_counter()

        def on_optimizer_step(self, a, state, control, **kw):
            self.optimizer_s = time.perf_counter() - self.t_opt

        def on_step_end(self, a, state, control, **kw):
            t_end = time.perf_counter()
            trainer = timer_box["trainer"]
            phases = {**trainer.phases, **timer_box["hooks"].take()}
            trainer.phases = {}
            row = {
                "step_s": t_end - self.t_exit,
                "generate_s": phases["generate_s"],
                "generate_forward_s": phases.get("forward_nograd", 0.0),
                "score_and_prepare_s": phases["generate_and_score_s"] - phases["generate_s"],
                "train_forward_s": phases.get("forward_train", 0.0),
                "optimizer_s": self.optimizer_s,
                "generated_tokens": generated[-1],
                "trained_tokens": phases["trained_tokens"],
                "prompt_tokens": phases["prompt_tokens"],
                "threads": torch.get_num_threads(),
            }
            row["generate_other_s"] = row["generate_s"] - row["generate_forward_s"]
            row["backward_and_rest_s"] = (
                row["step_s"]
                - phases["generate_and_score_s"]
                - row["train_forward_s"]
                - row["optimizer_s"]
            )
            trl_rows.append(row)
            e3.step()
            self.t_exit = time.perf_counter()

    model = copy.deepcopy(bench.model)
    with tempfile.TemporaryDirectory(prefix="trl-speed-") as tmp:
        cfg = GRPOConfig(
            output_dir=tmp,
            max_steps=args.warmup + args.steps,
            per_device_train_batch_size=batch,
            generation_batch_size=batch,
            gradient_accumulation_steps=1,
            num_generations=args.completions,
            num_iterations=1,
            max_completion_length=length,
            generation_kwargs={"min_new_tokens": length},
            temperature=1.0,
            beta=0.0,
            learning_rate=S.LR,
            max_grad_norm=1.0,
            # fp32 and no recomputation, as e3rl (TRL defaults to bf16 autocast and gradient
            # checkpointing, which would make it do different work).
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=args.seed,
        )
        trainer = _make_trainer_class()(
            model=model,
            reward_funcs=reward,
            args=cfg,
            train_dataset=Dataset.from_dict({"prompt": bench.prompts}),
            processing_class=bench.tokenizer,
            callbacks=[Alternate()],
        )
        trainer.phases = {}
        timer_box["trainer"] = trainer
        timer_box["hooks"] = S.PhaseTimer(trainer.model)
        torch.set_num_threads(args.threads)
        trainer.train()

    expected = batch * length
    for name, rows in (("trl", trl_rows), ("e3rl", e3.history)):
        for r in rows:
            if r["generated_tokens"] != expected or r["trained_tokens"] != expected:
                raise RuntimeError(
                    f"{name} step did {r['generated_tokens']} generated / {r['trained_tokens']} "
                    f"trained tokens, not {expected}: the work is not equal"
                )
    if any(r["prompt_tokens"] != batch * bench.prompt_tokens for r in trl_rows):
        raise RuntimeError("TRL saw prompts of another length than e3rl")
    med = {"trl": S.summarize(trl_rows, args.warmup), "e3rl": S.summarize(e3.history, args.warmup)}
    return {
        "max_new_tokens": length,
        "generated_tokens_per_step": expected,
        "trained_tokens_per_step": expected,
        "trl": {"steps": trl_rows, "median": med["trl"]},
        "e3rl": {"steps": e3.history, "median": med["e3rl"]},
        "e3rl_over_trl": med["e3rl"]["step_s"] / med["trl"]["step_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--steps", type=int, default=10, help="measured steps of each trainer (>= 5)")
    ap.add_argument("--warmup", type=int, default=2, help="steps of each dropped first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--completions", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error(f"--steps must be >= 1 and --warmup >= 0, got {args.steps} and {args.warmup}")

    import trl

    import e3rl

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    bench = S.build("4.3M")
    rates = [S.matmul_gflops(args.threads)]
    results = {}
    for length in args.lengths:
        results[str(length)] = run_length(bench, length, args)
        rates.append(S.matmul_gflops(args.threads))
    # The floor uses the median of all matmul measurements (before, between and after).
    gflops = statistics.median(r["gflops"] for r in rates)
    for res in results.values():
        tokens = res["generated_tokens_per_step"]
        res["floor_s"] = S.floor_seconds(bench.params, tokens, tokens, gflops)
        res["trl_over_floor"] = res["trl"]["median"]["step_s"] / res["floor_s"]
        res["e3rl_over_floor"] = res["e3rl"]["median"]["step_s"] / res["floor_s"]
        res["targets"] = {
            "e3rl_at_most_0.8x_trl": res["e3rl_over_trl"] <= 0.8,
            "e3rl_within_1.3x_floor": res["e3rl_over_floor"] <= 1.3,
        }
    out = {
        "benchmark": "trl_speed",
        "environment": {
            **S.environment(args.threads),
            "trl": trl.__version__,
            "e3rl": e3rl.__version__,
        },
        "model": {
            "arch": "qwen2",
            **{k: v for k, v in vars(S.SIZES["4.3M"]).items() if k != "arch"},
            "vocab_size": len(bench.tokenizer),
            "parameters": bench.params,
        },
        "work": {
            "prompts_per_step": args.prompts,
            "completions_per_prompt": args.completions,
            "prompt_tokens": bench.prompt_tokens,
            "temperature": 1.0,
            "kl": 0.0,
            "dtype": "float32",
            "steps_measured": args.steps,
            "warmup_steps": args.warmup,
            "alternation": "one TRL step, then one e3rl step, repeated",
        },
        "matmul": {"measurements": rates, "median_gflops": gflops},
        "results": results,
        "wall_seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"matmul fp32 1024x1024, {args.threads} threads: {gflops:.1f} GFLOP/s")
    for length, res in results.items():
        t, e = res["trl"]["median"]["step_s"], res["e3rl"]["median"]["step_s"]
        print(
            f"{length:>4} new tokens: TRL {t:.3f} s/step ({res['trl_over_floor']:.2f}x floor), "
            f"e3rl {e:.3f} s/step ({res['e3rl_over_floor']:.2f}x floor), "
            f"e3rl/TRL {res['e3rl_over_trl']:.2f}, floor {res['floor_s']:.3f} s"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
