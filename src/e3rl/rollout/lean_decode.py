"""One-token decode steps for Llama/Qwen2-family models, with fused weights and a short op list.

A transformers decode step runs about 45 kernels per layer: separate q/k/v and gate/up
projections on weights stored [out, in], the rotary embedding per tensor, mask handling.
`LeanDecoder.step` computes the same function over the model's own weights, rotary module and
KV cache (`kv_cache.RoomyLayer`) with q/k/v and gate/up each fused into one matrix multiply on
pre-transposed copies of the weights and the rotary embedding applied to q and k together;
attention stays with torch's SDPA kernel (reading the cache dominates it; a matmul-softmax-matmul
version was slower). Prefill stays with transformers: it runs once per prompt. The gain is
largest for small models, where those kernels cost as much as the matmuls (1.07-1.19x rollout
throughput on the 4.3M benchmark model, nil on SmolLM2-135M: docs/benchmarks.md).

Only architectures whose layers are exactly that (`unsupported_reason` says why not otherwise)
take this path; everything else decodes through the model's own forward. Tests check the logits
against transformers' at every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ARCHITECTURES = ("llama", "qwen2")


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why `model` cannot take the lean decode path (None: it can)."""
    if hasattr(model, "get_base_model"):
        return "a PEFT model (its adapter layers are not plain linear layers)"
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in ARCHITECTURES:
        return f"model_type {kind!r} (lean decoding knows {', '.join(ARCHITECTURES)})"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r}"
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or []):
        return "sliding-window layers"
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        return "sliding-window attention"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    if getattr(model, "hf_quantizer", None) is not None:
        return "a quantized model"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "rotary_emb") or not hasattr(model, "lm_head"):
        return "an unexpected module layout"
    for layer in inner.layers:
        a, m = layer.self_attn, layer.mlp
        linears = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
        if any(type(lin) is not torch.nn.Linear for lin in linears):
            return "projection layers that are not plain nn.Linear"
    return None


def _t(*weights: torch.Tensor) -> torch.Tensor:
    # [in, out], contiguous: x @ w beats F.linear(x, weight) by 1-15 % at M = 64 (decode_kernels.py)
    return torch.cat(weights).t().contiguous()


def _mm(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x @ w if bias is None else torch.addmm(bias, x, w)


def _bias(*linears: torch.nn.Linear) -> torch.Tensor | None:
    if all(lin.bias is None for lin in linears):
        return None
    return torch.cat(
        [
            lin.bias if lin.bias is not None else lin.weight.new_zeros(lin.out_features)
            for lin in linears
        ]
    )


class LeanDecoder:
    """Decode steps over a transformers model's weights. Build one per `generate` call (the
    fused matrices are copies, so they must be made after the last optimizer step)."""

    @torch.no_grad()  # the fused copies must not join an autograd graph
    def __init__(self, model: torch.nn.Module) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(f"lean decoding does not support this model: {reason}")
        cfg, inner = model.config, model.model
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        self.embed, self.rotary, self.lm_head = inner.embed_tokens, inner.rotary_emb, model.lm_head
        self.norm = inner.norm.weight
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm.weight,
                    _t(a.q_proj.weight, a.k_proj.weight, a.v_proj.weight),
                    _bias(a.q_proj, a.k_proj, a.v_proj),
                    _t(a.o_proj.weight),
                    a.o_proj.bias,
                    layer.post_attention_layernorm.weight,
                    _t(m.gate_proj.weight, m.up_proj.weight),
                    _bias(m.gate_proj, m.up_proj),
                    _t(m.down_proj.weight),
                    m.down_proj.bias,
                )
            )

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # transformers normalises in float32 and scales after casting back to the input dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    @torch.no_grad()
    def step(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        cache,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, V] of the next token after `tokens` [B] at `positions` [B], appending
        their keys and values to `cache` (a DynamicCache of `kv_cache.RoomyLayer`s).
        `key_mask` [B, L] (1 = attend) covers the cache after the append; None: attend to all."""
        b, h, kv, d = tokens.shape[0], self.heads, self.kv_heads, self.head_dim
        x = self.embed(tokens)
        cos, sin = self.rotary(x, positions[:, None])  # [B, 1, D]
        cos, sin = cos.transpose(0, 1), sin.transpose(0, 1)  # [1, B, D]: broadcast over heads
        allowed = None if key_mask is None else key_mask.bool()[:, None, None, :]
        for layer, (ln1, w_qkv, b_qkv, w_o, b_o, ln2, w_gu, b_gu, w_d, b_d) in zip(
            cache.layers, self.layers, strict=True
        ):
            qkv = _mm(self._rms(x, ln1), w_qkv, b_qkv)
            # q and k rotate together: [H + KV, B, D]
            qk = qkv[:, : (h + kv) * d].view(b, h + kv, d).transpose(0, 1)
            half = d // 2
            rot = torch.cat([-qk[..., half:], qk[..., :half]], dim=-1)
            qk = qk * cos + rot * sin
            q = qk[:h].transpose(0, 1)[:, :, None]  # [B, H, 1, D]
            k = qk[h:].transpose(0, 1)  # [B, KV, D]
            v = qkv[:, (h + kv) * d :].view(b, kv, d)
            keys, values = layer.update(k[:, :, None], v[:, :, None])  # [B, KV, L, D]
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=allowed, scale=self.scale, enable_gqa=kv != h
            ).reshape(b, h * d)
            x = x + _mm(out, w_o, b_o)
            gate, up = _mm(self._rms(x, ln2), w_gu, b_gu).chunk(2, dim=-1)
            x = x + _mm(F.silu(gate) * up, w_d, b_d)
        return self.lm_head(self._rms(x, self.norm))
