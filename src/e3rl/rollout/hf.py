"""Rollouts with a transformers model: a lean sampling loop over a KV cache (CPU or GPU).

Why not `model.generate`: we need, per sampled token, its log-probability at the sampling
temperature and the entropy of the sampling distribution (for the temperature controller), and
we want two savings that matter here: each distinct prompt is prefilled once and its cache
copied to all of its samples, and finished sequences leave the batch instead of being carried
along as padding.
"""

from __future__ import annotations

import torch

from e3rl.precision import autocast
from e3rl.rollout.base import Rollouts, check_request, collated_rollouts
from e3rl.rollout.kv_cache import cache_kwarg, has_room, new_cache
from e3rl.rollout.lean_decode import LeanDecoder, unsupported_reason


def _entropy(logp: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    return -((logp.exp() if probs is None else probs) * logp).sum(-1)


def sample_tokens(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of `probs` [B, V], drawn by inverting the cumulative distribution with one
    uniform number per row. The same distribution as `torch.multinomial(probs, 1)`, which on CPU
    draws an exponential variate for every vocabulary entry: about 10x slower at V = 384 and 20x
    at 49,152 (benchmarks/decode_kernels.py). A zero-probability token is never drawn: its
    cumulative value equals its predecessor's, and the search returns the first entry above the
    uniform.

    The uniforms are drawn on the generator's device and moved to `probs`': the trainer's sampler
    is a CPU generator, which torch refuses for a CUDA draw ("Expected a 'cuda' device type for
    generator"); drawing on it also keeps one seed's samples the same on CPU and GPU."""
    cdf = probs.cumsum(-1)
    draw_on = generator.device if generator is not None else probs.device
    u = torch.rand((probs.shape[0], 1), generator=generator, device=draw_on, dtype=cdf.dtype)
    u = u.to(probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


class HFEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        micro_batch_size: int = 256,
        generator: torch.Generator | None = None,
        autocast_dtype: torch.dtype | None = None,
        lean_decode: bool = True,
    ) -> None:
        self.model = model
        self.autocast_dtype = autocast_dtype  # bf16 compute over float32 weights (mixed precision)
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        self.generator = generator
        self.eos_ids = self._eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.cache_arg = cache_kwarg(model)
        self.skip_full_mask = True
        """Pass no attention mask for chunks without padding (False: always pass it)."""
        reason = unsupported_reason(model) if lean_decode else "rollout.lean_decode is off"
        self.decode_path = "lean" if reason is None else f"transformers ({reason})"
        """How decode steps run: 'lean' (`lean_decode.LeanDecoder`) or the model's own forward."""

    @staticmethod
    def _eos_ids(model, tokenizer) -> list[int]:
        ids = {tokenizer.eos_token_id}
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:  # chat models often end a turn with a token of their own
            ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        return sorted(i for i in ids if i is not None)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        counts: list[int],
        temperature: float,
        max_new_tokens: int,
    ) -> Rollouts:
        check_request(prompts, counts)
        prompt_index = [i for i, c in enumerate(counts) for _ in range(c)]
        was_training = self.model.training
        self.model.eval()
        responses: list[list[int]] = []
        per_token: dict[str, list[list[float]]] = {"logprobs": [], "entropy": [], "entropy_t1": []}
        truncated: list[bool] = []
        mb = self.micro_batch_size
        for start in range(0, len(prompt_index), mb):
            chunk = prompt_index[start : start + mb]
            with autocast(self.autocast_dtype, self.device):
                out = self._generate_chunk(prompts, chunk, temperature, max_new_tokens)
            responses += out[0]
            for k, rows in out[1].items():
                per_token[k] += rows
            truncated += out[2]
        self.model.train(was_training)
        return collated_rollouts(
            prompts, prompt_index, responses, per_token, truncated, self.pad_id, self.tokenizer
        )

    def _generate_chunk(self, prompts, chunk, temperature, max_new_tokens):
        dev = self.device
        uniq = sorted(set(chunk))
        row_of = {p: r for r, p in enumerate(uniq)}
        width = max(len(prompts[p]) for p in uniq)
        ids = torch.full((len(uniq), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(uniq), width), dtype=torch.long)
        for r, p in enumerate(uniq):
            ids[r, width - len(prompts[p]) :] = torch.tensor(prompts[p])
            attn[r, width - len(prompts[p]) :] = 1
        ids, attn = ids.to(dev), attn.to(dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        # Without padding the mask is all ones, which transformers drops anyway (no mask, causal
        # attention): not passing it saves building and checking it at every token.
        full = self.skip_full_mask and bool(attn.all())

        # Prefill each distinct prompt once, then copy its cache rows to all of its samples.
        cache = new_cache(max_new_tokens)
        out = self.model(
            input_ids=ids,
            attention_mask=None if full else attn,
            position_ids=pos,
            use_cache=True,
            logits_to_keep=1,
            **{self.cache_arg: cache},
        )
        expand = torch.tensor([row_of[p] for p in chunk], dtype=torch.long, device=dev)
        cache.reorder_cache(expand)
        # Fused weights are copies: made here, after the prefill, from the current weights.
        lean = LeanDecoder(self.model) if self.decode_path == "lean" and has_room(cache) else None
        logits = out.logits[:, -1].float().index_select(0, expand)
        attn = attn.index_select(0, expand)
        next_pos = pos[:, -1].index_select(0, expand) + 1

        n = len(chunk)
        tokens = torch.full((n, max_new_tokens), self.pad_id, dtype=torch.long, device=dev)
        stats = torch.zeros((3, n, max_new_tokens), dtype=torch.float32, device=dev)
        lengths = torch.zeros(n, dtype=torch.long, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        eos = torch.tensor(self.eos_ids, device=dev)
        active = torch.arange(n, device=dev)  # rows of the full chunk still in the batch

        for t in range(max_new_tokens):
            logp_t1 = torch.log_softmax(logits, -1)
            probs = None
            if temperature > 0:
                # logits / 1 == logits exactly: at T = 1 the second log-softmax is the first.
                logp = torch.log_softmax(logits / temperature, -1) if temperature != 1 else logp_t1
                probs = logp.exp()
                tok = sample_tokens(probs, self.generator)
            else:
                logp = logp_t1
                tok = logits.argmax(-1)
            ent = _entropy(logp, probs)
            ent_t1 = _entropy(logp_t1) if temperature != 1 else ent
            stats[:, active, t] = torch.stack(
                [logp.gather(-1, tok[:, None]).squeeze(-1), ent, ent_t1]
            )
            tokens[active, t] = tok
            lengths[active] += 1
            finished = torch.isin(tok, eos)
            done[active] = finished
            if bool(finished.all()) or t == max_new_tokens - 1:
                break
            keep = ~finished
            if not bool(keep.all()):
                # Shrink the batch: finished rows cost a full forward per token otherwise.
                idx = keep.nonzero().squeeze(-1)
                cache.batch_select_indices(idx)
                active, tok, attn, next_pos = active[idx], tok[idx], attn[idx], next_pos[idx]
            if not full:
                attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=-1)
            if lean is not None:
                logits = lean.step(tok, next_pos, cache, None if full else attn).float()
            else:
                out = self.model(
                    input_ids=tok[:, None],
                    attention_mask=None if full else attn,
                    position_ids=next_pos[:, None],
                    use_cache=True,
                    **{self.cache_arg: cache},
                )
                logits = out.logits[:, -1].float()
            next_pos = next_pos + 1

        lengths_l = lengths.tolist()
        tokens_l, stats_l = tokens.tolist(), stats.tolist()
        responses = [tokens_l[i][: lengths_l[i]] for i in range(n)]
        per_token = {
            k: [stats_l[j][i][: lengths_l[i]] for i in range(n)]
            for j, k in enumerate(("logprobs", "entropy", "entropy_t1"))
        }
        return responses, per_token, (~done).tolist()
