"""Step time of E3GRPOTrainer (TRL with e3rl) against plain GRPOTrainer on the same work.

    make test-trl                                   # once: .venv-bench with TRL and e3rl
    OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/trl_overhead.py
    # check that it runs (seconds, numbers meaningless):
    .venv-bench/bin/python benchmarks/trl_overhead.py --steps 2 --warmup 1 --lengths 8 \
        --out /tmp/trl_overhead.json

Same model (the SPEC's 4.3M-parameter Qwen2 of benchmarks/speed_setup.py, same initial
weights), same prompts (8 of equal token length per step), 8 completions per prompt on average,
exactly `L` new tokens each (`min_new_tokens = max_new_tokens`), so both trainers generate and
train the same number of tokens every step whatever the allocation and the temperature. The
e3rl arm runs everything e3rl adds: value allocator (n_min 0, n_max 16), entropy-steered
temperature (1 warm-up round), length bias.

The data set is `--distinct-prompts` prompts (16: two rounds an epoch), so prompts come back,
the difficulty tracker has history and the value allocator really moves the budget.

Both trainers run `trainer.train()` in one process, each in its own thread, and hand a baton
to each other at every step: exactly one runs at a time, one step each, alternating. A step is
timed from its `on_step_begin` to its `on_log` (generation, scoring, e3rl's work, the update,
TRL's logging). The first `--warmup` steps of each are dropped; medians over the rest.

On a loaded machine the difference of two step medians is mostly noise, so the e3rl arm also
times e3rl's own work directly: every call the adapter adds (E3Control's plan / observe /
set_epoch / register, prompt hashing, rebuilding the rows, the ragged advantages, metric
names, log fixes, the temperature writes), summed per step.
Writes benchmarks/results/trl_overhead.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import speed_setup as S
import torch

OUT = Path(__file__).parent / "results" / "trl_overhead.json"
# success_threshold 0.3: the dense reward of a random model spreads around it, so groups are
# mixed and the value allocator really moves the budget (at 1.0 every group is all-wrong)
E3RL = {
    "budget": {"allocator": "value", "n_min": 0, "n_max": 16, "success_threshold": 0.3},
    "temperature_control": "entropy",
    "temperature": {"warmup_steps": 1},
    "length_bias": {"mu": 1e-3, "threshold": 0.1},
}


def _baton(mine: threading.Semaphore, other: threading.Semaphore, times: list[float], spent):
    from transformers import TrainerCallback

    class Baton(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            mine.acquire()
            spent.append(0.0)
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                times.append(time.perf_counter() - self.t0)
                other.release()

    return Baton()


def _time_e3rl_work(trainer, spent: list[float]) -> None:
    """Wrap every piece of work the adapter adds (module functions it calls, E3Control's
    methods, its own small methods) so that their time is summed into spent[-1]."""
    import functools

    import e3rl.integrations.trl.trainer as T

    def timed(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[-1] += time.perf_counter() - t

        return wrapper

    for name in (
        "sampler_groups",
        "expand_rows",
        "ragged_advantages",
        "zero_std_fraction",
        "prompt_id_of",
        "verl_metrics",
    ):
        setattr(T, name, timed(getattr(T, name)))
    control = trainer._e3rl_control()  # built now (registers the data set: timed below)
    for name in ("plan", "observe_rewards", "observe_entropy", "set_epoch", "notices"):
        setattr(control, name, timed(getattr(control, name)))
    for name in ("_e3rl_set_temperature", "_e3rl_fix_trl_logs"):
        setattr(trainer, name, timed(getattr(trainer, name)))


def run_length(bench: S.Bench, length: int, args) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from e3rl.integrations.trl import E3GRPOTrainer

    batch = args.prompts * 8
    tokens: dict[str, list[int]] = {"trl": [], "e3rl": []}

    def reward_for(arm):
        def reward(completions, completion_ids, **_):
            tokens[arm].append(sum(len(c) for c in completion_ids))
            return [S.dense_reward(c) for c in completions]

        reward.__name__ = "dense"
        return reward

    times: dict[str, list[float]] = {"trl": [], "e3rl": []}
    spent: dict[str, list[float]] = {"trl": [0.0], "e3rl": [0.0]}  # e3rl's own work per step
    sems = {"trl": threading.Semaphore(1), "e3rl": threading.Semaphore(0)}
    trainers = {}
    tmp = tempfile.mkdtemp(prefix="trl-overhead-")
    for arm, other in (("trl", "e3rl"), ("e3rl", "trl")):
        cfg = GRPOConfig(
            output_dir=f"{tmp}/{arm}",
            max_steps=args.warmup + args.steps,
            per_device_train_batch_size=batch,
            num_generations=8,
            max_completion_length=length,
            generation_kwargs={"min_new_tokens": length},
            temperature=1.0,
            beta=0.0,
            learning_rate=S.LR,
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=args.seed,
        )
        kw = dict(
            model=copy.deepcopy(bench.model),
            reward_funcs=reward_for(arm),
            args=cfg,
            train_dataset=Dataset.from_dict({"prompt": bench.prompts[: args.distinct_prompts]}),
            processing_class=bench.tokenizer,
            callbacks=[_baton(sems[arm], sems[other], times[arm], spent[arm])],
        )
        trainers[arm] = E3GRPOTrainer(**kw, e3rl=E3RL) if arm == "e3rl" else GRPOTrainer(**kw)
    _time_e3rl_work(trainers["e3rl"], spent["e3rl"])
    threads = [threading.Thread(target=t.train, name=arm) for arm, t in trainers.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for arm, counts in tokens.items():
        if any(c != batch * length for c in counts) or len(counts) != args.warmup + args.steps:
            raise RuntimeError(f"{arm} generated {counts} tokens per step, not {batch * length}")
    med = {arm: statistics.median(ts[args.warmup :]) for arm, ts in times.items()}
    own = spent["e3rl"][1:]  # [0] collects the set-up (data set registration), before step 1
    own_med = statistics.median(own[args.warmup :])
    e3 = trainers["e3rl"].state.log_history
    return {
        "max_new_tokens": length,
        "completions_per_step": batch,
        "generated_tokens_per_step": batch * length,
        "step_s": times,
        "median_step_s": med,
        "e3rl_over_trl": med["e3rl"] / med["trl"],
        "e3rl_own_work_s": own,
        "e3rl_setup_s": spent["e3rl"][0],
        "median_e3rl_own_work_s": own_med,
        "e3rl_own_work_over_trl_step": own_med / med["trl"],
        "e3rl_alloc_max": [h.get("e3rl/alloc/max") for h in e3 if "loss" in h],
        "e3rl_temperature": [h.get("e3rl/temperature") for h in e3 if "loss" in h],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--distinct-prompts", type=int, default=16, help="size of the data set")
    ap.add_argument("--steps", type=int, default=20, help="measured steps of each trainer")
    ap.add_argument("--warmup", type=int, default=3, help="steps of each dropped first")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    import trl

    torch.set_num_threads(args.threads)
    bench = S.build("4.3M")
    results = {str(length): run_length(bench, length, args) for length in args.lengths}
    out = {
        "benchmark": "trl_overhead",
        "environment": {**S.environment(args.threads), "trl": trl.__version__},
        "e3rl": E3RL,
        "steps_measured": args.steps,
        "warmup_steps": args.warmup,
        "alternation": "one plain GRPOTrainer step, then one E3GRPOTrainer step, repeated",
        "results": results,
        "distinct_prompts": args.distinct_prompts,
        "note": "measured on a shared 2-core machine while other jobs ran: noisy",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    for length, res in results.items():
        m = res["median_step_s"]
        print(
            f"{length:>4} new tokens: TRL {m['trl']:.3f} s/step, TRL+e3rl {m['e3rl']:.3f} s/step, "
            f"ratio {res['e3rl_over_trl']:.3f}; e3rl's own work {res['median_e3rl_own_work_s'] * 1e3:.1f} "
            f"ms/step = {res['e3rl_own_work_over_trl_step'] * 100:.2f} % of a TRL step"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
