"""benchmarks/replay_engine.py and the replay arms of trl_parity.py: a recorded run's batches
through e3rl's loop."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import e3rl.train.run as T
from e3rl.rollout.hf import HFEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import trl_parity as P  # noqa: E402
from replay_engine import ReplayEngine, record_batch  # noqa: E402


def _prompts(tok, problems, k):
    return [tok(p.question, add_special_tokens=False)["input_ids"] for p in problems["train"][:k]]


def _record(r, prompts, counts) -> dict:
    """What a TRL run records of `r`: its rows' prompts and completions."""
    rows = [prompts[i] for i, c in enumerate(counts) for _ in range(c)]
    lengths = r.response_mask.sum(-1).long().tolist()
    w = r.prompt_width
    batches: list[dict] = []
    record_batch(batches, rows, [r.input_ids[s, w : w + n].tolist() for s, n in enumerate(lengths)])
    return batches[0]


@pytest.mark.parametrize("temperature", [0.8, 1.0])
def test_replay_returns_the_recorded_rows_with_the_policys_logprobs(tiny, temperature):
    model, tok, problems = tiny
    prompts, counts = _prompts(tok, problems, 3), [3, 2, 4]
    eng = HFEngine(model, tok, generator=torch.Generator().manual_seed(0))
    r = eng.generate(prompts, counts, temperature, 10)
    batch = _record(r, prompts, counts)
    assert batch["counts"] == counts
    got = ReplayEngine(model, tok, [batch]).generate(prompts, counts, temperature, 10)
    assert torch.equal(got.input_ids, r.input_ids) and torch.equal(
        got.response_mask, r.response_mask
    )
    assert got.texts == r.texts and torch.equal(got.truncated, r.truncated)
    m = r.response_mask.bool()
    assert torch.allclose(got.logprobs[m], r.logprobs[m], atol=1e-4)
    assert torch.allclose(got.entropy[m], r.entropy[m], atol=1e-4)
    assert (got.logprobs[~m] == 0).all()


def test_replay_refuses_other_prompts_and_a_step_past_the_recording(tiny):
    model, tok, problems = tiny
    prompts = _prompts(tok, problems, 2)
    r = HFEngine(model, tok, generator=torch.Generator().manual_seed(1)).generate(
        prompts, [2, 2], 1.0, 6
    )
    eng = ReplayEngine(model, tok, [_record(r, prompts, [2, 2])])
    with pytest.raises(RuntimeError, match="other prompts"):
        eng.generate(prompts[::-1], [2, 2], 1.0, 6)
    eng.generate(prompts, [2, 2], 1.0, 6)
    with pytest.raises(RuntimeError, match="1 batches"):
        eng.generate(prompts, [2, 2], 1.0, 6)


def test_replaying_an_e3rl_run_reproduces_its_parameters(tiny, tmp_path, monkeypatch):
    """The harness is faithful: e3rl's loop replaying its own run's batches (recorded where the
    TRL arm's go) ends at that run's parameters, up to float rounding, far closer than one
    step's move from the base."""
    model, tok, _ = tiny
    base = tmp_path / "base"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    monkeypatch.setattr(T, "Batches", T.Batches)  # the replay patches these two: restored after
    monkeypatch.setattr(T, "make_engine", T.make_engine)
    batches: list[dict] = []
    generate = HFEngine.generate

    params = tmp_path / "work" / "trl" / "seed0" / "params"
    params.mkdir(parents=True)

    def recording(self, prompts, counts, temperature, max_new_tokens):
        if batches:  # the policy after len(batches) updates, as the TRL arm saves it
            torch.save(self.model.state_dict(), params / f"step{len(batches)}.pt")
        r = generate(self, prompts, counts, temperature, max_new_tokens)
        batches.append(_record(r, prompts, counts))
        return r

    monkeypatch.setattr(HFEngine, "generate", recording)
    work = tmp_path / "work"
    ref = P.run_e3rl("e3rl", base, 0, 3, 1, work / "trl" / "seed0")
    monkeypatch.setattr(HFEngine, "generate", generate)
    (work / "trl" / "seed0" / "batches.json").write_text(json.dumps(batches))
    one = P.run_e3rl("e3rl", base, 0, 1, 1, work / "one-step")
    replay = P.run_e3rl("e3rl-replay", base, 0, 3, 1, work / "e3rl-replay" / "seed0")
    assert len(batches) == 3
    d = P.param_distance(Path(replay["final_dir"]), Path(ref["final_dir"]))
    moved = P.param_distance(Path(one["final_dir"]), base)["relative_l2"]
    assert d["relative_l2"] < 1e-3 * moved, (d, moved)
    trace = json.loads((work / "e3rl-replay" / "seed0" / "distance_to_trl.json").read_text())
    assert [t["step"] for t in trace] == [1, 2]
    assert all(t["their_move"] > 0 and t["distance"] < 1e-3 * t["their_move"] for t in trace)
