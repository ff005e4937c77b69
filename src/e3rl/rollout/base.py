"""What every rollout engine returns, and the engine protocol the trainer talks to."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class Rollouts:
    """Samples of one `generate` call, padded into one batch.

    Layout of `input_ids`: the prompt left-padded to `prompt_width`, then the response
    right-padded. Per-token tensors cover the response part only (shape [S, R]).
    """

    prompt_index: torch.Tensor
    """[S] index of each sample's prompt in the call's prompt list."""
    input_ids: torch.Tensor
    """[S, P + R] prompt and response tokens."""
    attention_mask: torch.Tensor
    """[S, P + R] 1 on real tokens."""
    prompt_width: int
    response_mask: torch.Tensor
    """[S, R] 1 on response tokens (the EOS that ends a response included)."""
    logprobs: torch.Tensor
    """[S, R] log-probability of each sampled token at the sampling temperature."""
    entropy: torch.Tensor
    """[S, R] entropy of softmax(logits / T) at each response position."""
    entropy_t1: torch.Tensor
    """[S, R] entropy of softmax(logits) (the policy itself, T = 1)."""
    texts: list[str]
    """Decoded responses (special tokens removed)."""
    truncated: torch.Tensor
    """[S] True where the response hit max_new_tokens without EOS."""

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def check_request(prompts: list[list[int]], counts: list[int]) -> None:
    """The checks every engine's `generate` makes on its arguments."""
    if len(prompts) != len(counts):
        raise ValueError(f"{len(prompts)} prompts but {len(counts)} counts")
    if any(c < 0 for c in counts):
        raise ValueError(f"counts must be >= 0, got {counts}")


class Engine(Protocol):
    def generate(
        self,
        prompts: list[list[int]],
        counts: list[int],
        temperature: float,
        max_new_tokens: int,
    ) -> Rollouts:
        """Draw `counts[i]` responses for prompt `i` (0 allowed); temperature 0 means greedy."""
        ...


@contextlib.contextmanager
def closing_engine(engine: Engine) -> Iterator[Engine]:
    """Calls the engine's `close()` on the way out, errors included (a vLLM engine holds GPU
    memory or RAM until then; the transformers engine has nothing to close)."""
    try:
        yield engine
    finally:
        close = getattr(engine, "close", None)
        if close is not None:
            close()


def collate(
    prompts: list[list[int]],
    prompt_index: list[int],
    responses: list[list[int]],
    per_token: dict[str, list[list[float]]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor, dict[str, torch.Tensor]]:
    """Left-pads prompts and right-pads responses into the `Rollouts` layout."""
    n = len(responses)
    p_width = max((len(prompts[i]) for i in prompt_index), default=0)
    r_width = max((len(r) for r in responses), default=0)
    ids = torch.full((n, p_width + r_width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, p_width + r_width), dtype=torch.long)
    rmask = torch.zeros((n, r_width), dtype=torch.float32)
    tensors = {k: torch.zeros((n, r_width), dtype=torch.float32) for k in per_token}
    for s, (i, resp) in enumerate(zip(prompt_index, responses, strict=True)):
        p = prompts[i]
        ids[s, p_width - len(p) : p_width] = torch.tensor(p, dtype=torch.long)
        attn[s, p_width - len(p) : p_width + len(resp)] = 1
        if resp:
            ids[s, p_width : p_width + len(resp)] = torch.tensor(resp, dtype=torch.long)
            rmask[s, : len(resp)] = 1
            for k, rows in per_token.items():
                tensors[k][s, : len(resp)] = torch.tensor(rows[s], dtype=torch.float32)
    return ids, attn, p_width, rmask, tensors


def collated_rollouts(
    prompts: list[list[int]],
    prompt_index: list[int],
    responses: list[list[int]],
    per_token: dict[str, list[list[float]]],
    truncated,
    pad_id: int,
    tokenizer,
) -> Rollouts:
    """Every engine's `Rollouts` from its responses and per-token rows: :func:`collate` plus the
    decoded texts. ``per_token`` must hold ``logprobs``; an entropy an engine cannot compute
    (vLLM returns none) is zeros until the engine fills it in."""
    ids, attn, p_width, rmask, tensors = collate(
        prompts, prompt_index, responses, per_token, pad_id
    )
    # transformers 5.17 decodes an empty batch as one empty text
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True) if responses else []
    return Rollouts(
        prompt_index=torch.tensor(prompt_index, dtype=torch.long),
        input_ids=ids,
        attention_mask=attn,
        prompt_width=p_width,
        response_mask=rmask,
        logprobs=tensors["logprobs"],
        entropy=tensors.get("entropy", torch.zeros_like(rmask)),
        entropy_t1=tensors.get("entropy_t1", torch.zeros_like(rmask)),
        texts=texts,
        truncated=torch.as_tensor(truncated, dtype=torch.bool),
    )
