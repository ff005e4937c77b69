"""benchmarks/generate_engine.py: TRL's way of sampling, in e3rl's rollout layout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from e3rl.update import response_logits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from generate_engine import GenerateEngine  # noqa: E402


def _prompts(tok, problems, k):
    return [tok(p.question, add_special_tokens=False)["input_ids"] for p in problems["train"][:k]]


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_logprobs_and_entropy_match_a_full_forward(tiny, temperature):
    model, tok, problems = tiny
    torch.manual_seed(0)
    r = GenerateEngine(model, tok).generate(_prompts(tok, problems, 3), [3, 0, 4], temperature, 8)
    assert r.prompt_index.tolist() == [0, 0, 0, 2, 2, 2, 2]
    R = r.response_mask.shape[1]
    with torch.no_grad():
        logits = response_logits(model, r.input_ids, r.attention_mask, R).float()
    logp = torch.log_softmax(logits / temperature, -1)
    m = r.response_mask.bool()
    tok_lp = logp.gather(-1, r.input_ids[:, -R:, None]).squeeze(-1)
    assert torch.allclose(tok_lp[m], r.logprobs[m], atol=1e-4)
    assert torch.allclose((-(logp.exp() * logp).sum(-1))[m], r.entropy[m], atol=1e-4)
    assert (r.logprobs[~m] == 0).all()


def test_responses_end_at_the_first_eos_as_trl_masks_them(tiny):
    model, tok, problems = tiny
    eng = GenerateEngine(model, tok)
    torch.manual_seed(3)
    first = eng.generate(_prompts(tok, problems, 4), [4] * 4, 1.0, 12)
    drawn = first.input_ids[:, first.prompt_width :][first.response_mask.bool()]
    eng.eos_ids = [int(drawn.mode().values)]  # a token the random model draws often: a stop token
    torch.manual_seed(3)
    r = eng.generate(_prompts(tok, problems, 4), [4] * 4, 1.0, 12)
    for s in range(len(r)):
        n = int(r.response_mask[s].sum())
        resp = r.input_ids[s, r.prompt_width : r.prompt_width + n].tolist()
        ended = eng.eos_ids[0] in resp
        assert bool(r.truncated[s]) == (not ended)
        if ended:  # the EOS is the last kept token, and the only one
            assert resp.index(eng.eos_ids[0]) == n - 1
        else:
            assert n == 12
    assert r.truncated.any() and not r.truncated.all()


def test_draws_what_generate_draws_from_the_same_global_seed(tiny):
    """TRL calls generate on the left-padded batch of repeated prompts and the global stream."""
    model, tok, problems = tiny
    prompts = _prompts(tok, problems, 2)
    torch.manual_seed(11)
    r = GenerateEngine(model, tok).generate(prompts, [2, 2], 1.0, 6)
    rows = [prompts[0]] * 2 + [prompts[1]] * 2
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in rows])
    attn = (
        torch.arange(width)[None] >= torch.tensor([width - len(p) for p in rows])[:, None]
    ).long()
    torch.manual_seed(11)
    ref = model.generate(
        input_ids=ids,
        attention_mask=attn,
        do_sample=True,
        top_k=0,
        max_new_tokens=6,
        pad_token_id=tok.pad_token_id,
        eos_token_id=GenerateEngine(model, tok).eos_ids,
    )
    texts = tok.batch_decode(ref[:, width:], skip_special_tokens=True)
    assert r.texts == texts


def test_greedy_is_refused(tiny):
    model, tok, problems = tiny
    with pytest.raises(ValueError, match="temperature"):
        GenerateEngine(model, tok).generate(_prompts(tok, problems, 1), [1], 0.0, 4)
