"""A rollout engine that samples as TRL's GRPOTrainer does: transformers' `generate`.

For the parity benchmark's `e3rl-generate` arm (`trl_parity.py`): e3rl's training loop with its
rollouts drawn the way TRL 1.16 draws them (`GRPOTrainer._generate_single_turn`, no vLLM): every
sample's prompt left-padded into one batch, one `model.generate` call with TRL's GenerationConfig
(do_sample, top_k 0, top_p 1, min_p None, repetition_penalty 1, compile off), the global torch
random stream, and the completion masked after its first EOS (the EOS kept). The per-token
log-probabilities and entropies e3rl's loop needs are read from the logits `generate` returns.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from e3rl.rollout.base import Rollouts, check_request, collated_rollouts
from e3rl.rollout.hf import HFEngine


class GenerateEngine:
    """`e3rl.rollout.base.Engine` over `model.generate`, as TRL calls it."""

    decode_path = "transformers generate (TRL's call)"

    def __init__(self, model: torch.nn.Module, tokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = HFEngine._eos_ids(model, tokenizer)

    def generation_config(self, temperature: float, max_new_tokens: int) -> GenerationConfig:
        """TRL 1.16's GenerationConfig for transformers generation (grpo_trainer.py)."""
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=True,
            pad_token_id=self.pad_id,
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=self.eos_ids,
            temperature=temperature,
            top_p=1.0,
            top_k=0,
            min_p=None,
            repetition_penalty=1.0,
            cache_implementation=None,
            disable_compile=True,
            output_logits=True,  # not TRL's: the log-probs e3rl's loop needs (sampling unchanged)
            return_dict_in_generate=True,
        )

    @torch.no_grad()
    def generate(
        self, prompts: list[list[int]], counts: list[int], temperature: float, max_new_tokens: int
    ) -> Rollouts:
        check_request(prompts, counts)
        if temperature <= 0:
            raise ValueError(f"GenerateEngine samples (TRL's do_sample): temperature {temperature}")
        prompt_index = [i for i, c in enumerate(counts) for _ in range(c)]
        rows = [prompts[i] for i in prompt_index]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for s, r in enumerate(rows):
            ids[s, width - len(r) :] = torch.tensor(r)
            attn[s, width - len(r) :] = 1
        out = self.model.generate(
            input_ids=ids,
            attention_mask=attn,
            generation_config=self.generation_config(temperature, max_new_tokens),
        )
        completion = out.sequences[:, width:]
        logits = torch.stack(out.logits, 1).float()[:, : completion.shape[1]]
        # TRL's mask: up to and including the first EOS
        is_eos = torch.isin(completion, torch.tensor(self.eos_ids))
        first = torch.where(is_eos.any(1), is_eos.int().argmax(1), completion.shape[1])
        keep = torch.arange(completion.shape[1])[None, :] <= first[:, None]
        logp_t1 = torch.log_softmax(logits, -1)
        logp = torch.log_softmax(logits / temperature, -1)
        stats = {
            "logprobs": logp.gather(-1, completion[..., None]).squeeze(-1),
            "entropy": -(logp.exp() * logp).sum(-1),
            "entropy_t1": -(logp_t1.exp() * logp_t1).sum(-1),
        }
        responses = [c[k].tolist() for c, k in zip(completion, keep, strict=True)]
        per_token = {
            name: [v[k].tolist() for v, k in zip(t, keep, strict=True)] for name, t in stats.items()
        }
        return collated_rollouts(
            prompts, prompt_index, responses, per_token, ~is_eos.any(1), self.pad_id, self.tokenizer
        )
