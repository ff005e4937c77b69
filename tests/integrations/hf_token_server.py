"""A local rollout engine for verl's agent loops: transformers ``generate`` behind the
``generate(request_id, prompt_ids=..., sampling_params=...) -> TokenOutput`` call that verl's
``LLMServerClient`` makes to a vLLM/SGLang server. It really samples (at the requested
temperature, top-p, top-k) from a real model; it records each request's sampling parameters."""

from __future__ import annotations

from typing import Any

import torch
from verl.workers.rollout.replica import TokenOutput


class HFTokenServer:
    def __init__(self, model, tokenizer, max_new_tokens: int, seed: int = 0) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.generator_seed = seed
        self.requests: list[dict[str, Any]] = []

    async def generate(
        self, request_id: str, *, prompt_ids: list[int], sampling_params: dict, **kwargs: Any
    ) -> TokenOutput:
        self.requests.append(dict(sampling_params))
        temperature = float(sampling_params.get("temperature", 1.0))
        torch.manual_seed(self.generator_seed + len(self.requests))
        ids = torch.tensor([prompt_ids])
        greedy = temperature == 0
        top_k = int(sampling_params.get("top_k", -1))
        with torch.no_grad():
            out = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=not greedy,
                temperature=None if greedy else temperature,
                top_p=float(sampling_params.get("top_p", 1.0)),
                top_k=top_k if top_k > 0 else None,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        return TokenOutput(token_ids=out[0, len(prompt_ids) :].tolist(), stop_reason="completed")
