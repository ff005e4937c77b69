"""One step of TRL's GRPOTrainer and of e3rl, on the same samples: are the two updates the same?

    .venv-bench/bin/python benchmarks/trl_parity_step.py --base BASE_DIR

The learning-parity benchmark (`trl_parity.py`) compares whole runs, where random streams differ.
This removes them: TRL generates and scores one batch (16 prompts x 8 completions, T = 1, 36 new
tokens) and computes its loss and gradient; e3rl's `policy_update` then takes the very same
tokens, its own advantages from the same rewards, and its gradient is compared with TRL's (before
clipping, in float32). Also checked, each against an independent reference:

- advantages: e3rl's `grpo_advantage` with TRL's epsilon (1e-4) against TRL's;
- the learning-rate schedule: e3rl's `_make_scheduler` against transformers' cosine schedule;
- sampling: the token distribution of TRL's `generate` (its GenerationConfig: top_k, top_p,
  min_p, repetition_penalty as TRL sets them) and of e3rl's sampler, against softmax(logits), by
  drawing the first response token many times for one prompt (total variation distance);
- e3rl's old log-probabilities (from the sampler, lean decoder) against the update's forward
  pass on its own rollouts: the PPO ratio of the first pass, and how many tokens it would clip.

Writes benchmarks/results/trl_parity/step_check.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results" / "trl_parity" / "step_check.json"


def flat_grad(model) -> torch.Tensor:
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
            for p in model.parameters()
        ]
    )


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double(), b.double()  # float32 cosines of equal vectors come out above 1
    return {
        "rel_l2_error": float((a - b).norm() / b.norm().clamp(min=1e-30)),
        "cosine": float(torch.nn.functional.cosine_similarity(a, b, dim=0)),
        "norm_e3rl": float(a.norm()),
        "norm_trl": float(b.norm()),
    }


def make_trainer(base: Path, seed: int):
    import trl_parity as P
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from e3rl.data import load_source, render
    from e3rl.rewards import resolve_reward

    model, tok = P.load_model(base)
    prompts = load_source("arith:train", P.demo_task())
    score = resolve_reward("auto", "arith")

    def reward(completions, answer, **_):
        return [float(score(c, a)) for c, a in zip(completions, answer, strict=True)]

    cfg = GRPOConfig(
        output_dir="/tmp/trl-parity-step",
        max_steps=P.STEPS,
        per_device_train_batch_size=P.PROMPTS * P.N,
        num_generations=P.N,
        max_completion_length=P.MAX_NEW,
        temperature=1.0,
        beta=0.0,
        learning_rate=P.LR,
        lr_scheduler_type="cosine",
        warmup_steps=P.WARMUP,
        adam_beta1=P.BETAS[0],
        adam_beta2=P.BETAS[1],
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        seed=seed,
    )
    rows = [{"prompt": render(p, tok), "answer": p.answer} for p in prompts]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=cfg,
        train_dataset=Dataset.from_list(rows[:64]),
        processing_class=tok,
    )
    trainer.current_gradient_accumulation_steps = 1  # set by train(); one window, as in the runs
    return trainer, tok, rows, score


def check_gradient(trainer, tok, rows, score, seed: int) -> dict:
    import trl_parity as P

    from e3rl.algos import group_advantages
    from e3rl.config import AlgoConfig
    from e3rl.rollout.base import Rollouts
    from e3rl.update import policy_update, response_logits

    model = trainer.model
    model.train()
    torch.manual_seed(seed)
    batch = [r for r in rows[100 : 100 + P.PROMPTS] for _ in range(P.N)]
    inputs = trainer._generate_and_score_completions(batch)
    comp = inputs["completion_ids"]
    cmask = inputs["completion_mask"]
    texts = tok.batch_decode(
        [c[m.bool()].tolist() for c, m in zip(comp, cmask, strict=True)], skip_special_tokens=True
    )
    rewards = torch.tensor([score(t, r["answer"]) for t, r in zip(texts, batch, strict=True)])
    groups = torch.arange(len(batch)) // P.N
    adv_e3 = group_advantages(rewards, groups, "grpo", 1e-4)
    adv_trl = inputs["advantages"].float()
    out = {
        "samples": len(batch),
        "completion_tokens": int(cmask.sum()),
        "mixed_groups": int(sum(0 < rewards[groups == g].mean() < 1 for g in range(P.PROMPTS))),
        "advantage_max_abs_diff": float((adv_e3 - adv_trl).abs().max()),
    }

    model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    g_trl = flat_grad(model)

    ids = torch.cat([inputs["prompt_ids"], comp], dim=1)
    attn = torch.cat([inputs["prompt_mask"], cmask], dim=1)
    p_width = inputs["prompt_ids"].shape[1]
    with torch.no_grad():
        old = torch.log_softmax(response_logits(model, ids, attn, comp.shape[1]).float(), -1)
        old = old.gather(-1, comp.unsqueeze(-1)).squeeze(-1)
    zeros = torch.zeros_like(old)
    r = Rollouts(
        prompt_index=groups,
        input_ids=ids,
        attention_mask=attn,
        prompt_width=p_width,
        response_mask=cmask.float(),
        logprobs=old,
        entropy=zeros,
        entropy_t1=zeros,
        texts=texts,
        truncated=torch.zeros(len(batch), dtype=torch.bool),
    )
    sgd = torch.optim.SGD(model.parameters(), lr=0.0)  # leaves the weights; the grads stay
    for share in (True, False):
        model.zero_grad(set_to_none=True)
        policy_update(model, sgd, r, adv_trl, 1.0, AlgoConfig(), grad_clip=0.0, share_prompts=share)
        key = "gradient_shared_prompts" if share else "gradient"
        out[key] = compare(flat_grad(model), g_trl)
    model.zero_grad(set_to_none=True)
    return out


def check_schedule() -> dict:
    import trl_parity as P
    from transformers import get_cosine_schedule_with_warmup

    from e3rl.demo import demo_config
    from e3rl.train.run import make_scheduler as _make_scheduler

    cfg = demo_config(Path("_unused"))
    lrs = {}
    for name in ("e3rl", "transformers"):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=P.LR)
        sched = (
            _make_scheduler(opt, cfg)
            if name == "e3rl"
            else get_cosine_schedule_with_warmup(opt, P.WARMUP, P.STEPS)
        )
        seq = []
        for _ in range(P.STEPS):
            seq.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        lrs[name] = seq
    diff = [abs(a - b) for a, b in zip(lrs["e3rl"], lrs["transformers"], strict=True)]
    return {
        "first_lrs_e3rl": lrs["e3rl"][:12],
        "first_lrs_transformers": lrs["transformers"][:12],
        "max_abs_diff_after_warmup": max(diff[P.WARMUP :]),
        "sum_lr_e3rl": sum(lrs["e3rl"]),
        "sum_lr_transformers": sum(lrs["transformers"]),
    }


def chi_square(freq: torch.Tensor, probs: torch.Tensor, draws: int) -> dict:
    """Pearson's goodness of fit of observed frequencies to `probs`: tokens expected fewer than 5
    times pooled into one bin; p-value by the Wilson-Hilferty normal approximation (no scipy)."""
    expected, observed = probs.double() * draws, freq.double() * draws
    big = expected >= 5
    e = torch.cat([expected[big], expected[~big].sum().view(1)])
    o = torch.cat([observed[big], observed[~big].sum().view(1)])
    keep = e > 0
    stat = float(((o - e)[keep] ** 2 / e[keep]).sum())
    k = int(keep.sum()) - 1
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return {"chi2": stat, "dof": k, "p_value": 0.5 * math.erfc(z / math.sqrt(2))}


def check_sampling(trainer, tok, rows, draws: int, seed: int) -> dict:
    """Next-token frequencies of TRL's generate and of e3rl's sampler at one context, against
    softmax(logits). The context is the highest-entropy position of a batch of e3rl rollouts (a
    peaked distribution would show nothing)."""
    from e3rl.rollout.hf import HFEngine, sample_tokens

    model = trainer.model.eval()
    engine = HFEngine(model, tok, generator=torch.Generator().manual_seed(seed))
    prompt_ids = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows[:16]]
    r = engine.generate(prompt_ids, [8] * 16, 1.0, 36)
    ent = r.entropy.masked_fill(r.response_mask == 0, -1)
    row, pos = divmod(int(ent.argmax()), ent.shape[1])
    resp = r.input_ids[row, r.prompt_width : r.prompt_width + pos].tolist()
    ids = torch.tensor([prompt_ids[int(r.prompt_index[row])] + resp])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float()
    probs = torch.softmax(logits, -1)
    gen = trainer.generation_config
    out = {
        "trl_generation_config": {
            k: getattr(gen, k, None)
            for k in ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty")
        },
        "context": tok.decode(ids[0]),
        "entropy": float(-(probs * probs.clamp(min=1e-30).log()).sum()),
        "draws": draws,
    }
    cfg = gen.__class__(**{**gen.to_dict(), "max_new_tokens": 1, "min_new_tokens": 1})
    torch.manual_seed(seed)
    toks = []
    for chunk in range(0, draws, 2000):
        n = min(2000, draws - chunk)
        with torch.no_grad():
            g = model.generate(
                input_ids=ids.expand(n, -1),
                attention_mask=torch.ones_like(ids).expand(n, -1),
                generation_config=cfg,
            )
        toks.append(g[:, -1])
    trl_freq = torch.bincount(torch.cat(toks), minlength=len(probs)).float() / draws
    e3_toks = sample_tokens(probs.expand(draws, -1), torch.Generator().manual_seed(seed))
    e3_freq = torch.bincount(e3_toks, minlength=len(probs)).float() / draws
    gen1 = torch.Generator().manual_seed(seed + 1)
    mult = torch.multinomial(probs, draws, replacement=True, generator=gen1)
    ref_freq = torch.bincount(mult, minlength=len(probs)).float() / draws
    top = probs.argsort(descending=True)[:5]
    out.update(
        {
            "tv_trl_vs_softmax": float(0.5 * (trl_freq - probs).abs().sum()),
            "tv_e3rl_vs_softmax": float(0.5 * (e3_freq - probs).abs().sum()),
            "tv_multinomial_vs_softmax": float(0.5 * (ref_freq - probs).abs().sum()),
            "chi2_trl": chi_square(trl_freq, probs, draws),
            "chi2_e3rl": chi_square(e3_freq, probs, draws),
            "chi2_multinomial": chi_square(ref_freq, probs, draws),
            "top5": [
                {
                    "token": tok.decode([int(t)]),
                    "p": float(probs[t]),
                    "trl": float(trl_freq[t]),
                    "e3rl": float(e3_freq[t]),
                }
                for t in top
            ],
        }
    )
    model.train()
    return out


def check_optimizer(trainer) -> dict:
    """What transformers' Trainer builds for TRL (the e3rl side: optim.make_optimizer)."""
    opt = trainer.create_optimizer()
    g = opt.param_groups
    return {
        "class": type(opt).__name__,
        "groups": len(g),
        "weight_decay": sorted({x["weight_decay"] for x in g}),
        "betas": list(g[0]["betas"]),
        "eps": g[0]["eps"],
        "fused": g[0].get("fused"),
    }


def check_old_logprobs(base: Path, seed: int) -> dict:
    """e3rl's rollouts of the demo's first step: sampler log-probs vs the update's forward."""
    import trl_parity as P

    from e3rl.algos import token_logprobs
    from e3rl.data import encode_prompts, load_source
    from e3rl.rollout.hf import HFEngine
    from e3rl.update import _trim, trimmed_logits

    model, tok = P.load_model(base)
    prompts = encode_prompts(load_source("arith:train", P.demo_task()), tok, 512)
    engine = HFEngine(model, tok, generator=torch.Generator().manual_seed(seed))
    r = engine.generate(prompts.token_ids[:16], [P.N] * 16, 1.0, P.MAX_NEW)
    model.train()
    ids, attn, p, width = _trim(r, torch.arange(len(r)))
    with torch.no_grad():
        logp = token_logprobs(trimmed_logits(model, ids, attn, p, width), ids[:, p : p + width])
    mask = r.response_mask[:, :width].bool()
    diff = (logp - r.logprobs[:, :width])[mask]
    ratio = diff.exp()
    return {
        "tokens": int(mask.sum()),
        "max_abs_logprob_diff": float(diff.abs().max()),
        "mean_abs_logprob_diff": float(diff.abs().mean()),
        "max_abs_ratio_minus_1": float((ratio - 1).abs().max()),
        "clipped_tokens_at_0.2": int(((ratio - 1).abs() > 0.2).sum()),
        "eos_in_loss_mask": bool(
            all(
                r.input_ids[i, r.prompt_width + int(r.response_lengths[i]) - 1] == tok.eos_token_id
                for i in range(len(r))
                if not r.truncated[i]
            )
        ),
    }


def _rollouts_from_trl(inputs, texts, groups, old_logprobs):
    """TRL's generation batch in e3rl's Rollouts layout (left-padded prompts, right-padded
    responses), with `old_logprobs` as the sampling log-probabilities."""
    from e3rl.rollout.base import Rollouts

    comp, cmask = inputs["completion_ids"], inputs["completion_mask"]
    zeros = torch.zeros_like(old_logprobs)
    return Rollouts(
        prompt_index=groups,
        input_ids=torch.cat([inputs["prompt_ids"], comp], dim=1),
        attention_mask=torch.cat([inputs["prompt_mask"], cmask], dim=1),
        prompt_width=inputs["prompt_ids"].shape[1],
        response_mask=cmask.float(),
        logprobs=old_logprobs,
        entropy=zeros,
        entropy_t1=zeros,
        texts=texts,
        truncated=torch.zeros(len(groups), dtype=torch.bool),
    )


def _from_zero(factor):
    """e3rl's schedule with transformers' warm-up (step / warmup instead of (step + 1) / warmup)."""
    import trl_parity as P

    return lambda k: k / P.WARMUP if k < P.WARMUP else factor(k)


def check_trajectory(
    trainer, tok, rows, score, base: Path, seed: int, steps: int, prompts: int
) -> dict:
    """`steps` optimizer steps of TRL (its own AdamW and cosine schedule, clip 1) and, on the same
    samples each step (TRL's), of e3rl's update on copies of the same initial weights: e3rl as
    configured for the demo (warm-up from lr / 10, adv_eps 1e-6), and e3rl with TRL's warm-up
    from 0 and adv_eps 1e-4. After each step, the distance of each e3rl copy to TRL's weights,
    relative to how far TRL's weights have moved from the base."""

    import trl_parity as P

    from e3rl.algos import group_advantages
    from e3rl.config import AlgoConfig
    from e3rl.demo import demo_config
    from e3rl.optim import make_optimizer
    from e3rl.train.loop import _advance_schedule
    from e3rl.train.run import make_scheduler as _make_scheduler
    from e3rl.update import policy_update, response_logits

    model = trainer.model
    model.train()
    trainer.create_optimizer_and_scheduler(num_training_steps=P.STEPS)
    opt_t, sched_t = trainer.optimizer, trainer.lr_scheduler
    cfg = demo_config(Path("_unused"))
    theta0 = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
    arms = {}
    for name, eps in (("e3rl", 1e-6), ("e3rl_trl_warmup_eps", 1e-4)):
        # Loaded afresh, not deep-copied: the forward TRL's trainer wraps would be copied as a
        # closure over TRL's model, and the copy's update would train TRL's weights.
        m = P.load_model(base)[0]
        m.load_state_dict(model.state_dict())
        opt = make_optimizer(m.parameters(), P.LR, P.BETAS, weight_decay=0.0)
        sched = _make_scheduler(opt, cfg)
        if name != "e3rl":  # TRL's warm-up: lr * step / warmup, so the first step has lr 0
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _from_zero(sched.lr_lambdas[0]))
        arms[name] = (m, opt, sched, eps)
    torch.manual_seed(seed)
    rows_per_step = [rows[200 + k * prompts : 200 + (k + 1) * prompts] for k in range(steps)]
    history = []
    for k in range(steps):
        batch = [r for r in rows_per_step[k] for _ in range(P.N)]
        inputs = trainer._generate_and_score_completions(batch)
        comp, cmask = inputs["completion_ids"], inputs["completion_mask"]
        texts = tok.batch_decode(
            [c[m_.bool()].tolist() for c, m_ in zip(comp, cmask, strict=True)],
            skip_special_tokens=True,
        )
        rewards = torch.tensor([score(t, r["answer"]) for t, r in zip(texts, batch, strict=True)])
        groups = torch.arange(len(batch)) // P.N
        ids = torch.cat([inputs["prompt_ids"], comp], dim=1)
        attn = torch.cat([inputs["prompt_mask"], cmask], dim=1)
        with torch.no_grad():  # the sampling policy's log-probs, as e3rl's sampler records them
            lp = torch.log_softmax(response_logits(model, ids, attn, comp.shape[1]).float(), -1)
            old = lp.gather(-1, comp.unsqueeze(-1)).squeeze(-1)
        r = _rollouts_from_trl(inputs, texts, groups, old)
        row = {"step": k + 1, "lr_trl": sched_t.get_last_lr()[0], "reward": float(rewards.mean())}
        for name, (m, opt, sched, eps) in arms.items():
            adv = group_advantages(rewards, groups, "grpo", eps)
            row[f"lr_{name}"] = sched.get_last_lr()[0]
            policy_update(m, opt, r, adv, 1.0, AlgoConfig(adv_eps=eps), grad_clip=1.0)
            _advance_schedule(sched)
        opt_t.zero_grad(set_to_none=True)
        loss = trainer._compute_loss(model, inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt_t.step()
        sched_t.step()
        opt_t.zero_grad(set_to_none=True)
        theta = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
        moved = float((theta - theta0).norm())
        row["trl_moved"] = moved
        for name, (m, *_rest) in arms.items():
            th = torch.cat([p.detach().flatten() for p in m.parameters()]).double()
            row[f"{name}_rel_dist"] = float((th - theta).norm()) / max(moved, 1e-30)
        if any(row[f"{n}_rel_dist"] == 1.0 for n in arms):
            raise RuntimeError("an e3rl copy did not move: its update trained other weights")
        history.append(row)
        print(json.dumps(row), flush=True)
    return {"steps": steps, "prompts_per_step": prompts, "history": history}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trajectory", type=int, default=15, help="steps of the trajectory check")
    ap.add_argument(
        "--trajectory-prompts", type=int, default=16, help="prompts per trajectory step (x 8)"
    )
    ap.add_argument("--only-trajectory", action="store_true", help="skip the one-step checks")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    trainer, tok, rows, score = make_trainer(args.base, args.seed)
    res = {"base": str(args.base)}
    if not args.only_trajectory:
        res["schedule"] = check_schedule()
        res["gradient"] = check_gradient(trainer, tok, rows, score, args.seed)
        res["sampling"] = check_sampling(trainer, tok, rows, args.draws, args.seed)
        res["optimizer"] = check_optimizer(trainer)
        res["old_logprobs"] = check_old_logprobs(args.base, args.seed)
    # last: it trains TRL's model
    res["trajectory"] = check_trajectory(
        trainer, tok, rows, score, args.base, args.seed, args.trajectory, args.trajectory_prompts
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    g = res.get("gradient", {}).get("gradient")
    if g and not (g["rel_l2_error"] < 1e-3 and math.isclose(g["cosine"], 1.0, abs_tol=1e-5)):
        print("the gradients differ")


if __name__ == "__main__":
    main()
