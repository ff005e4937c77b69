"""The lean decode step against transformers' own forward, and the engine on both paths."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

from e3rl.rollout.hf import HFEngine, sample_tokens
from e3rl.rollout.kv_cache import cache_kwarg, new_cache
from e3rl.rollout.lean_decode import LeanDecoder, unsupported_reason

VOCAB = 97


def _model(kind: str, **extra) -> torch.nn.Module:
    common = dict(
        vocab_size=VOCAB,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=80,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=1,
    )
    common.update(extra)
    config = LlamaConfig(**common) if kind == "llama" else Qwen2Config(**common)
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(config).eval()
    # norms away from 1 and non-zero biases: a weight in the wrong place shows
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


MODELS = {
    "qwen2 (q/k/v bias, tied)": lambda: _model("qwen2", tie_word_embeddings=True),
    "llama GQA 4/2, untied": lambda: _model("llama", num_key_value_heads=2),
    "llama GQA 4/1, all biases": lambda: _model(
        "llama", num_key_value_heads=1, attention_bias=True, mlp_bias=True
    ),
    "llama head_dim 16 != hidden/heads, rope theta 1e5": lambda: _model(
        "llama", head_dim=16, rope_theta=1e5
    ),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("padded", [False, True])
def test_logits_match_transformers_at_every_step(name, padded):
    model = MODELS[name]()
    assert unsupported_reason(model) is None
    gen = torch.Generator().manual_seed(0)
    b, width, steps = 6, 7, 10
    ids = torch.randint(2, VOCAB, (b, width), generator=gen)
    attn = torch.ones_like(ids)
    if padded:  # left padding of different widths
        for r, pad in enumerate([0, 3, 1, 5, 0, 2]):
            ids[r, :pad], attn[r, :pad] = 0, 0
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    caches = [new_cache(4), new_cache(4)]  # room 4 < steps: the buffers must also grow
    arg = cache_kwarg(model)  # transformers < 5.2x drops an unknown `cache=` into **kwargs
    with torch.no_grad():
        for cache in caches:
            model(
                input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, **{arg: cache}
            )
        lean = LeanDecoder(model)
        tok, next_pos = torch.randint(2, VOCAB, (b,), generator=gen), pos[:, -1] + 1
        for t in range(steps):
            attn = torch.cat([attn, attn.new_ones((len(attn), 1))], dim=-1)
            ref = model(
                input_ids=tok[:, None],
                attention_mask=attn if padded else None,
                position_ids=next_pos[:, None],
                use_cache=True,
                **{arg: caches[0]},
            ).logits[:, -1]
            ours = lean.step(tok, next_pos, caches[1], attn if padded else None)
            torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-5)
            tok, next_pos = ref.argmax(-1), next_pos + 1
            if t == 4:  # rows leave the batch, as finished samples do in the engine
                keep = torch.tensor([0, 2, 3, 5])
                for cache in caches:
                    cache.batch_select_indices(keep)
                tok, next_pos, attn = tok[keep], next_pos[keep], attn[keep]


@pytest.mark.parametrize("name", MODELS)
def test_engine_samples_the_same_on_both_paths(name):
    model = MODELS[name]()
    prompts = [[5, 9, 12], [7, 3, 22, 40, 41, 8], [60]]  # different lengths: padding
    out = []
    for lean in (True, False):
        eng = HFEngine(
            model,
            _Tok(),
            micro_batch_size=5,
            generator=torch.Generator().manual_seed(11),
            lean_decode=lean,
        )
        assert eng.decode_path.startswith("lean" if lean else "transformers")
        out.append(eng.generate(prompts, [3, 2, 4], 0.9, 12))
    a, b = out
    assert torch.equal(a.input_ids, b.input_ids)  # same tokens, EOS stops included
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.entropy_t1, b.entropy_t1, atol=1e-5, rtol=0)


class _Tok:
    """The little of a tokenizer the engine uses."""

    pad_token_id, eos_token_id = 0, 1

    def batch_decode(self, rows, skip_special_tokens=True):
        return [" ".join(map(str, r)) for r in rows]


def test_models_it_cannot_decode_fall_back_with_a_reason():
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2)
    )
    assert "model_type 'gpt2'" in unsupported_reason(gpt2)
    assert "sliding" in unsupported_reason(
        _model("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=0)
    )
    assert "hidden_act" in unsupported_reason(_model("llama", hidden_act="gelu"))
    eng = HFEngine(gpt2, _Tok())
    assert eng.decode_path.startswith("transformers (model_type")
    with pytest.raises(ValueError, match="gpt2"):
        LeanDecoder(gpt2)


def test_lora_models_fall_back():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert "PEFT" in unsupported_reason(model)


# ---- sampling


def test_sample_tokens_follows_the_distribution():
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    n = 40_000
    draws = sample_tokens(probs.repeat(n, 1), torch.Generator().manual_seed(0)).view(n, 2)
    assert (draws[:, 1] == 4).all()  # a one-hot row is deterministic
    counts = torch.bincount(draws[:, 0], minlength=5).double()
    expected = probs[0].double() * n
    assert counts[1] == counts[4] == 0  # zero probability: never drawn
    sd = (expected * (1 - probs[0].double())).sqrt()
    assert ((counts - expected).abs() <= 5 * sd).all(), counts  # 5 sigma of a binomial


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 300), st.floats(0.05, 0.95))
def test_sample_tokens_never_draws_a_zero_probability_token(seed, vocab, zero_share):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, vocab, generator=gen) * 4
    zero = torch.rand(64, vocab, generator=gen) < zero_share
    zero[:, 0] = False  # each row keeps at least one token
    probs = torch.softmax(logits.masked_fill(zero, float("-inf")), -1)
    tok = sample_tokens(probs, gen)
    assert ((tok >= 0) & (tok < vocab)).all()
    assert (probs.gather(1, tok[:, None]) > 0).all()


def test_bf16_autocast_stays_close_to_transformers():
    """Mixed precision (model.dtype=bfloat16): both paths run under bf16 autocast; their
    log-probabilities agree to bf16 rounding."""
    model = MODELS["llama GQA 4/2, untied"]()
    prompts = [[5, 9, 12], [7, 3, 22, 40, 41, 8]]
    out = []
    for lean in (True, False):
        eng = HFEngine(
            model,
            _Tok(),
            generator=torch.Generator().manual_seed(2),
            autocast_dtype=torch.bfloat16,
            lean_decode=lean,
        )
        out.append(eng.generate(prompts, [4, 4], 1.0, 8))
    a, b = out
    same = (a.input_ids == b.input_ids).all(-1)  # rows that drew the same tokens on both paths
    assert same.float().mean() >= 0.5
    diff = (a.logprobs - b.logprobs)[same].abs().max()
    assert diff < 0.05, diff
