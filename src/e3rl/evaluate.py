"""Evaluation: greedy accuracy, mean@n, pass@k, token entropy and answer diversity.

The same function serves validation during training and `e3rl eval`: it drives the training
rollout engine and reward runner, so what is measured is what is trained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from e3rl.data import Prompt
from e3rl.metrics import distinct_answers, mean_at_n, pass_at_k, summarize_by
from e3rl.rewards.checkers import final_answer
from e3rl.rewards.runner import RewardRunner
from e3rl.rollout.base import Engine
from e3rl.tensors import masked_mean

BREAKDOWN_KEYS = ("level", "data_source")


def evaluate(
    engine: Engine,
    prompts: Sequence[Prompt],
    token_ids: Sequence[list[int]],
    reward: RewardRunner,
    max_new_tokens: int,
    n: int = 0,
    temperature: float = 1.0,
    ks: Sequence[int] = (),
    chunk: int = 64,
    success_threshold: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Greedy accuracy on every prompt; with n > 0 also n samples per prompt at `temperature`.

    `progress(k)` is called after each chunk of k prompts (for a progress bar).
    """
    items: list[dict[str, Any]] = []
    ent_sum = ent_tokens = 0.0
    sampled_answers: list[list[str | None]] = []
    sampled_rewards: list[list[float]] = []
    for start in range(0, len(prompts), chunk):
        ps, ids = prompts[start : start + chunk], list(token_ids[start : start + chunk])
        greedy = engine.generate(ids, [1] * len(ps), 0.0, max_new_tokens)
        scores = reward(greedy.texts, [p.answer for p in ps], [p.meta for p in ps])
        for p, text, score in zip(ps, greedy.texts, scores, strict=True):
            item = {
                "id": p.id,
                "correct": score >= success_threshold,
                "reward": score,
                "response": text,
            }
            item.update({k: p.meta[k] for k in BREAKDOWN_KEYS if k in p.meta})
            items.append(item)
        if n > 0:
            sampled = engine.generate(ids, [n] * len(ps), temperature, max_new_tokens)
            rewards = reward(
                sampled.texts,
                [ps[i].answer for i in sampled.prompt_index.tolist()],
                [ps[i].meta for i in sampled.prompt_index.tolist()],
            )
            ent_sum += masked_mean(sampled.entropy, sampled.response_mask) * sampled.num_tokens
            ent_tokens += sampled.num_tokens
            for j in range(len(ps)):
                r = rewards[j * n : (j + 1) * n]  # samples come grouped by prompt, in order
                texts = sampled.texts[j * n : (j + 1) * n]
                c = sum(x >= success_threshold for x in r)
                items[start + j].update(
                    {
                        "mean_at_n": sum(r) / n,
                        "num_correct": c,
                        **{f"pass@{k}": pass_at_k(n, c, k) for k in ks},
                        "distinct_answers": len({final_answer(t) for t in texts} - {None}),
                    }
                )
                sampled_rewards.append(r)
                sampled_answers.append([final_answer(t) for t in texts])
        if progress is not None:
            progress(len(ps))

    result: dict[str, Any] = {
        "num_prompts": len(items),
        "greedy_accuracy": sum(i["correct"] for i in items) / max(len(items), 1),
        "n": n,
        "temperature": temperature if n else None,
    }
    if n > 0:
        result["mean_at_n"] = mean_at_n(sampled_rewards)
        result["pass_at_k"] = {str(k): sum(i[f"pass@{k}"] for i in items) / len(items) for k in ks}
        result["entropy"] = ent_sum / max(ent_tokens, 1)
        result["distinct_answers"] = distinct_answers(sampled_answers)
    result["by_group"] = {
        key: {str(g): v for g, v in summarize_by(items, key).items()}
        for key in BREAKDOWN_KEYS
        if any(key in i for i in items)
    }
    result["items"] = items
    return result
