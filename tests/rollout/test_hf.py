import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e3rl.rollout.hf import HFEngine, sample_tokens
from e3rl.update import response_logits


def _prompts(tok, problems, k):
    return [tok(p.question, add_special_tokens=False)["input_ids"] for p in problems["train"][:k]]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=5), st.integers(1, 7))
def test_returns_exactly_the_requested_counts(tiny, counts, micro):
    model, tok, problems = tiny
    eng = HFEngine(model, tok, micro_batch_size=micro, generator=torch.Generator().manual_seed(0))
    r = eng.generate(_prompts(tok, problems, len(counts)), counts, 1.0, 6)
    assert len(r) == sum(counts) == len(r.texts)
    assert r.prompt_index.tolist() == [i for i, c in enumerate(counts) for _ in range(c)]
    assert r.response_mask.shape == r.logprobs.shape == r.entropy.shape
    lengths = r.response_mask.sum(-1)
    assert ((lengths >= 1) & (lengths <= 6)).all()
    # Masked positions carry nothing; log-probs are <= 0 and entropies >= 0 on real tokens.
    assert (r.logprobs[r.response_mask == 0] == 0).all()
    assert (r.logprobs[r.response_mask == 1] <= 0).all()
    assert (r.entropy[r.response_mask == 1] >= 0).all()


def test_greedy_matches_transformers_generate(tiny):
    model, tok, problems = tiny
    eng = HFEngine(model, tok, micro_batch_size=3)
    prompts = _prompts(tok, problems, 5)
    ours = eng.generate(prompts, [1] * 5, 0.0, 10)
    texts = [p.question for p in problems["train"][:5]]
    enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    ref = model.generate(  # not **enc: transformers 4.56 refuses the token_type_ids in it
        input_ids=enc.input_ids,
        attention_mask=enc.attention_mask,
        max_new_tokens=10,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    ref_texts = tok.batch_decode(ref[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    assert ours.texts == ref_texts


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.6])
def test_sampling_logprobs_and_entropy_match_a_full_forward(tiny, temperature):
    model, tok, problems = tiny
    eng = HFEngine(model, tok, micro_batch_size=4, generator=torch.Generator().manual_seed(1))
    r = eng.generate(_prompts(tok, problems, 3), [3, 2, 4], temperature, 8)
    R = r.response_mask.shape[1]
    with torch.no_grad():
        logits = response_logits(model, r.input_ids, r.attention_mask, R).float()
    logp = torch.log_softmax(logits / temperature, -1)
    tok_lp = logp.gather(-1, r.input_ids[:, -R:, None]).squeeze(-1)
    ent = -(logp.exp() * logp).sum(-1)
    ent1 = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
    m = r.response_mask.bool()
    # KV-cached decoding and one full forward differ only by float32 rounding.
    assert torch.allclose(tok_lp[m], r.logprobs[m], atol=1e-4)
    assert torch.allclose(ent[m], r.entropy[m], atol=1e-4)
    assert torch.allclose(ent1[m], r.entropy_t1[m], atol=1e-4)


def test_same_seed_same_samples(tiny):
    model, tok, problems = tiny
    prompts = _prompts(tok, problems, 2)
    a = HFEngine(model, tok, 8, torch.Generator().manual_seed(5)).generate(prompts, [3, 3], 1.0, 6)
    b = HFEngine(model, tok, 8, torch.Generator().manual_seed(5)).generate(prompts, [3, 3], 1.0, 6)
    assert torch.equal(a.input_ids, b.input_ids)


def test_bad_counts():
    with pytest.raises(ValueError, match="counts"):
        HFEngine.generate(object.__new__(HFEngine), [[1]], [1, 2], 1.0, 4)


def test_preallocated_cache_gives_the_same_rollouts_as_a_plain_cache(tiny, monkeypatch):
    """The engine's cache writes into room allocated ahead instead of concatenating; the samples,
    log-probabilities and entropies must be those of transformers' own DynamicCache, also when
    finished rows leave the batch (several stop tokens make rows finish at different steps)."""
    from transformers import DynamicCache

    import e3rl.rollout.hf as hf
    from e3rl.rollout.kv_cache import RoomyLayer, new_cache

    model, tok, problems = tiny
    prompts = _prompts(tok, problems, 4)

    def run():
        eng = HFEngine(model, tok, micro_batch_size=16, generator=torch.Generator().manual_seed(3))
        eng.eos_ids = list(range(20, 60))  # frequent enough that rows stop at different steps
        return eng.generate(prompts, [5, 1, 6, 4], 1.0, 12)

    ours = run()
    assert type(new_cache(4).layer_class_to_replicate()) is RoomyLayer
    monkeypatch.setattr(hf, "new_cache", lambda room: DynamicCache())
    plain = run()
    lengths = ours.response_mask.sum(-1)
    assert lengths.min() < lengths.max() and lengths.max() == 12  # rows did leave the batch
    assert torch.equal(ours.input_ids, plain.input_ids)
    assert torch.equal(ours.response_mask, plain.response_mask)
    for name in ("logprobs", "entropy", "entropy_t1"):
        torch.testing.assert_close(getattr(ours, name), getattr(plain, name), rtol=0, atol=1e-6)


def test_roomy_layer_matches_a_dynamic_layer_through_every_operation():
    from e3rl.rollout.kv_cache import DynamicLayer, RoomyLayer

    g = torch.Generator().manual_seed(0)
    ours, ref = RoomyLayer(room=2), DynamicLayer()
    steps = [
        ("update", 3),
        ("update", 1),
        ("update", 1),
        ("update", 2),  # outgrows the room: the buffers grow
        ("select", torch.tensor([2, 0])),
        ("update", 1),
        ("repeat", 2),
        ("crop", -2),
        ("update", 1),
    ]
    for op, arg in steps:
        if op == "update":
            b = ref.keys.shape[0] if ref.keys is not None and ref.keys.numel() else 3
            k, v = torch.randn(b, 2, arg, 4, generator=g), torch.randn(b, 2, arg, 4, generator=g)
            out, exp = ours.update(k, v), ref.update(k, v)
            assert torch.equal(out[0], exp[0]) and torch.equal(out[1], exp[1])
        elif op == "select":
            ours.batch_select_indices(arg)
            ref.batch_select_indices(arg)
        elif op == "repeat":
            ours.batch_repeat_interleave(arg)
            ref.batch_repeat_interleave(arg)
        else:
            ours.crop(arg)
            ref.crop(arg)
        assert ours.get_seq_length() == ref.get_seq_length()
        assert torch.equal(ours.keys, ref.keys) and torch.equal(ours.values, ref.values)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_skipping_an_all_ones_mask_gives_identical_rollouts(tiny, temperature):
    """Prompts of one length need no attention mask: the engine passes none, and the samples,
    log-probabilities and entropies are bit for bit those of passing the all-ones mask."""
    model, tok, problems = tiny
    prompts = _prompts(tok, problems, 40)
    length = max({len(p) for p in prompts}, key=[len(p) for p in prompts].count)
    prompts = [p for p in prompts if len(p) == length][:3]
    assert len(prompts) == 3

    def run(skip):
        eng = HFEngine(model, tok, micro_batch_size=16, generator=torch.Generator().manual_seed(4))
        eng.skip_full_mask = skip
        eng.eos_ids = list(range(20, 40))  # rows leave the batch at different steps
        return eng.generate(prompts, [4, 2, 5], temperature, 10)

    masks: list[bool] = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kw: masks.append(kw.get("attention_mask") is None), with_kwargs=True
    )
    try:
        a = run(True)
        assert masks and all(masks)  # no mask was built
        masks.clear()
        b = run(False)
        assert masks and not any(masks)
    finally:
        hook.remove()
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.response_mask, b.response_mask)
    for name in ("logprobs", "entropy", "entropy_t1"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    if temperature == 1.0:
        assert torch.equal(a.entropy, a.entropy_t1)


def test_sample_tokens_draws_on_the_generator_device(monkeypatch):
    """The trainer's sampler is a CPU generator; with the policy on CUDA, torch refuses a CUDA
    draw from it, so the uniforms must be drawn on the generator's device. Emulated here with
    torch's check on every draw and the probabilities on the meta device."""
    import e3rl.rollout.hf as hf

    real_rand = torch.rand

    def strict_rand(*args, generator=None, device=None, **kw):
        want = torch.device(device or "cpu").type
        if generator is not None and generator.device.type != want:
            raise RuntimeError(f"Expected a '{want}' device type for generator but found 'cpu'")
        return real_rand(*args, generator=generator, device=device, **kw)

    monkeypatch.setattr(hf.torch, "rand", strict_rand)
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    tok = sample_tokens(probs.to("meta"), torch.Generator().manual_seed(0))
    assert tok.device.type == "meta" and tok.shape == (2,)
    assert sample_tokens(probs, torch.Generator().manual_seed(0))[1] == 0  # and on CPU as before
