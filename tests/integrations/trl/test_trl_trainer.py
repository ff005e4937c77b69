"""E3GRPOTrainer on TRL 1.16's real trainer with a tiny CPU model (`make test-trl`)."""

from __future__ import annotations

import collections
import json
import math

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl_tiny import grpo_config, tiny_model_and_prompts  # noqa: E402  (tests/helpers)

from e3rl.algos import group_advantages  # noqa: E402
from e3rl.config import ConfigError  # noqa: E402
from e3rl.integrations.trl import E3GRPOTrainer  # noqa: E402
from e3rl.integrations.trl.trainer import STATE_FILE  # noqa: E402


class Recorder:
    """A reward function that records, per call (= per generation round), what TRL passed."""

    __name__ = "recorder"

    def __init__(self, reward_of):
        self.reward_of = reward_of
        self.calls: list[dict] = []

    def __call__(self, prompts, completions, completion_ids, **kw):
        rewards = [self.reward_of(p, c) for p, c in zip(prompts, completions, strict=True)]
        self.calls.append({"prompts": list(prompts), "rewards": rewards})
        return rewards


def _mixed_reward(prompts_easy, prompts_hard):
    """Easy prompts always right, hard ones always wrong, the rest right on a coin flip of the
    completion's text (so their groups are mixed)."""

    def reward(prompt, completion):
        if prompt in prompts_easy:
            return 1.0
        if prompt in prompts_hard:
            return 0.0
        return float(hash(completion) % 2)

    return reward


class Spy(E3GRPOTrainer):
    """Records each round's allocation and the batch TRL's scoring returned (before shuffling)."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.model.training:
            self.rounds = getattr(self, "rounds", [])
            rnd = self._e3rl_round
            self.rounds.append(
                {
                    "ids": list(rnd.prompt_ids),
                    "counts": list(rnd.counts),
                    "prompts": [
                        inputs[i * self.num_generations]["prompt"] for i in range(len(rnd.counts))
                    ],
                    "advantages": out["advantages"].clone(),
                    "temperature": self.temperature,
                }
            )
        return out


def _trainer(tmp_path, e3rl, cls=Spy, reward=None, **cfg):
    model, tok, prompts, answers = tiny_model_and_prompts()
    ds = Dataset.from_dict({"prompt": prompts, "answer": answers})
    rec = Recorder(reward or _mixed_reward(set(prompts[:2]), set(prompts[2:4])))
    trainer = cls(
        model=model,
        processing_class=tok,
        reward_funcs=[rec],
        train_dataset=ds,
        args=grpo_config(tmp_path, **cfg),
        e3rl=e3rl,
    )
    return trainer, rec, prompts


VALUE = {"budget": {"allocator": "value", "n_min": 0, "n_max": 12, "recheck_prob": 0.0}}


def test_counts_per_prompt_are_the_allocation(tmp_path):
    trainer, rec, prompts = _trainer(tmp_path, VALUE, max_steps=6)
    trainer.train()
    assert len(rec.calls) == len(trainer.rounds) == 6
    moved = False
    for call, rnd in zip(rec.calls, trainer.rounds, strict=True):
        seen = collections.Counter(call["prompts"])
        want = {p: c for p, c in zip(rnd["prompts"], rnd["counts"], strict=True) if c > 0}
        assert dict(seen) == want
        assert sum(rnd["counts"]) == 16  # the generation batch, exactly
        moved |= len(set(rnd["counts"])) > 1
    assert moved, "the value allocator never moved the budget"
    # After a few rounds, a prompt that is always solved gets fewer rollouts than a mixed one.
    last = dict(zip(trainer.rounds[-1]["prompts"], trainer.rounds[-1]["counts"], strict=True))
    easy = [last[p] for p in prompts[:2] if p in last]
    mixed = [last[p] for p in prompts[4:] if p in last]
    if easy and mixed:
        assert max(easy) <= min(mixed)


def test_advantages_are_e3rls_on_the_ragged_groups(tmp_path):
    trainer, rec, _ = _trainer(tmp_path, VALUE, max_steps=4)
    trainer.train()
    for call, rnd in zip(rec.calls, trainer.rounds, strict=True):
        order = {p: i for i, p in enumerate(dict.fromkeys(call["prompts"]))}
        groups = torch.tensor([order[p] for p in call["prompts"]])
        want = group_advantages(torch.tensor(call["rewards"]), groups, mode="grpo")
        torch.testing.assert_close(rnd["advantages"], want)
        for g in set(groups.tolist()):  # a group of one gets 0
            if int((groups == g).sum()) == 1:
                assert float(want[groups == g]) == 0.0


class TemperatureSpy(E3GRPOTrainer):
    """Records the temperature each generate call samples with, and checks every log-prob TRL
    computes (old log-probs and the loss) against a plain forward pass at that temperature."""

    def _generate_single_turn(self, *a, **kw):
        model = self.accelerator.unwrap_model(self.model)
        original = model.generate

        def generate(*ga, generation_config=None, **gk):
            self.sampled_at.append(float(generation_config.temperature))
            return original(*ga, generation_config=generation_config, **gk)

        model.generate = generate
        try:
            return super()._generate_single_turn(*a, **kw)
        finally:
            del model.generate

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, keep, *a, **kw):
        logps, ent, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, keep, *a, **kw
        )
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
            t = self.sampled_at[-1]
            ref = torch.log_softmax(logits[:, -keep - 1 : -1].float() / t, dim=-1)
            ref = ref.gather(-1, input_ids[:, -keep:].unsqueeze(-1)).squeeze(-1)
            mask = attention_mask[:, -keep:].bool()
            self.logp_checks.append((t, float((logps.detach() - ref)[mask].abs().max())))
        return logps, ent, aux


ENTROPY = {
    **VALUE,
    "temperature_control": "entropy",
    # far below the random model's entropy (about ln |V|): the controller must cool down
    "temperature": {"warmup_steps": 1, "target_entropy": 2.0},
}


@pytest.mark.parametrize(("spg", "accum", "iters"), [(1, 1, 1), (2, 1, 1), (2, 2, 2)])
def test_temperature_reaches_generation_and_the_log_probs(tmp_path, spg, accum, iters):
    # spg=2: a round spans two optimizer steps and TRL computes old log-probs; (2, 2, 2): with
    # gradient accumulation, and each round trained on twice (num_iterations)
    micro = spg * iters  # micro-steps per round
    trainer, _, _ = _trainer(
        tmp_path,
        ENTROPY,
        cls=TemperatureSpy,
        max_steps=4 * micro // accum,
        per_device_train_batch_size=16 // spg,
        steps_per_generation=spg,
        gradient_accumulation_steps=accum,
        num_iterations=iters,
    )
    trainer.sampled_at, trainer.logp_checks = [], []
    trainer.train()
    temps = trainer.sampled_at
    assert len(temps) == 4  # one generate call per round
    # one warm-up round at T0, one more at T0 while it measures, then cooler each round
    assert temps[:2] == [1.0, 1.0] and temps[3] < temps[2] < 1.0
    calls_per_round = micro + (1 if accum % micro else 0)  # loss passes + TRL's old log-probs
    assert len(trainer.logp_checks) == 4 * calls_per_round
    for t, err in trainer.logp_checks:
        assert err < 1e-4, f"log-probs at T={t} are off by {err}"
    logged = [h["e3rl/temperature"] for h in trainer.state.log_history if "e3rl/temperature" in h]
    assert logged == pytest.approx(temps)


METRICS = [
    "e3rl/temperature",
    "e3rl/target_entropy",
    "e3rl/entropy",
    "e3rl/alloc/min",
    "e3rl/alloc/mean",
    "e3rl/alloc/max",
    "e3rl/groups/all_correct_frac",
    "e3rl/groups/all_wrong_frac",
    "e3rl/groups/mixed_frac",
]


def test_metrics_are_in_trls_log_history(tmp_path):
    trainer, rec, _ = _trainer(tmp_path, ENTROPY, max_steps=3)
    trainer.train()
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 3
    for h in steps:
        for key in METRICS:
            assert key in h, key
    # the entropy is the token-weighted mean TRL's own `entropy` metric also reports
    assert steps[0]["e3rl/entropy"] == pytest.approx(steps[0]["entropy"], rel=1e-5)
    assert steps[0]["e3rl/target_entropy"] == 2.0
    call = rec.calls[0]
    correct = collections.defaultdict(list)
    for p, r in zip(call["prompts"], call["rewards"], strict=True):
        correct[p].append(r >= 1.0)
    n = len(correct)
    assert steps[0]["e3rl/groups/all_correct_frac"] == sum(all(v) for v in correct.values()) / n
    assert steps[0]["e3rl/groups/all_wrong_frac"] == sum(not any(v) for v in correct.values()) / n


def _resumable(tmp_path, name):
    return _trainer(tmp_path / name, ENTROPY, max_steps=4, save_strategy="steps", save_steps=2)


def test_resume_restores_tracker_and_controller(tmp_path):
    full, _, _ = _resumable(tmp_path, "full")
    full.train()
    saved = json.loads((tmp_path / "full" / "checkpoint-2" / STATE_FILE).read_text())
    assert saved["control"]["steps"] == 2

    resumed, _, _ = _resumable(tmp_path, "resumed")
    loaded = {}
    original = resumed._load_optimizer_and_scheduler

    def spy(checkpoint):
        original(checkpoint)
        loaded.update(resumed.e3rl.state_dict())
        loaded["temperature"] = resumed.temperature

    resumed._load_optimizer_and_scheduler = spy
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert {k: loaded[k] for k in saved["control"]} == saved["control"]
    assert loaded["temperature"] == saved["control"]["controller"]["temperature"] != 1.0

    # The two last rounds continue from that state (sampling after a resume is not bit-equal
    # to the uninterrupted run's, so the rewards may differ): the same temperatures follow,
    # and the tracker holds the saved rollouts plus those of two rounds.
    def temps(t):
        return [h["e3rl/temperature"] for h in t.state.log_history if "e3rl/temperature" in h]

    assert len(temps(full)) == 4  # (the resumed log history starts with the checkpoint's)
    # round 3's temperature comes from the saved state alone; round 4's from round 3's entropy
    assert temps(resumed)[:3] == temps(full)[:3]
    assert temps(resumed)[3] == pytest.approx(temps(full)[3], rel=1e-4)
    after = resumed.e3rl.state_dict()
    assert sum(after["tracker"]["rollouts"]) == sum(saved["control"]["tracker"]["rollouts"]) + 32
    assert after["steps"] == full.e3rl.state_dict()["steps"] == 4


def test_resume_without_e3rl_state_is_a_clear_error(tmp_path):
    full, _, _ = _resumable(tmp_path, "full")
    full.train()
    (tmp_path / "full" / "checkpoint-2" / STATE_FILE).unlink()
    again, _, _ = _resumable(tmp_path, "again")
    with pytest.raises(FileNotFoundError, match="e3rl_state.json is missing"):
        again.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))


@pytest.mark.parametrize(
    ("e3rl", "cfg", "match"),
    [
        ({"budget": {"allocater": "value"}}, {}, r"unknown keys \['allocater'\] in e3rl.budget"),
        ({"temperature_control": "entropic"}, {}, "e3rl.temperature_control='entropic'"),
        (
            {"budget": {"allocator": "value", "n_min": 0, "n_max": 3}},
            {},
            "GRPOConfig.num_generations=4 is invalid",
        ),
        (VALUE, {"scale_rewards": "batch"}, "scale_rewards='batch' is invalid"),
        (
            VALUE,
            {"multi_objective_aggregation": "normalize_then_sum"},
            "multi_objective_aggregation='normalize_then_sum' is invalid",
        ),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, e3rl, cfg, match):
    with pytest.raises(ConfigError, match=match):
        _trainer(tmp_path, e3rl, **cfg)


def test_dr_grpo_advantages_without_std(tmp_path):
    trainer, rec, _ = _trainer(tmp_path, VALUE, max_steps=2, scale_rewards="none")
    trainer.train()
    for call, rnd in zip(rec.calls, trainer.rounds, strict=True):
        order = {p: i for i, p in enumerate(dict.fromkeys(call["prompts"]))}
        groups = torch.tensor([order[p] for p in call["prompts"]])
        want = group_advantages(torch.tensor(call["rewards"]), groups, mode="drgrpo")
        torch.testing.assert_close(rnd["advantages"], want)
    assert not math.isnan(float(trainer.rounds[0]["advantages"].sum()))


class FakeVLLMServer:
    """Stands in for TRL's VLLMClient (``trl vllm-serve``): n random completions per prompt of
    ``max_tokens`` tokens, recording what each request asked for."""

    def __init__(self, vocab: int):
        self.vocab, self.requests = vocab, []

    def generate(self, prompts, features=None, n=1, temperature=1.0, max_tokens=4, **kw):
        self.requests.append({"prompts": len(prompts), "n": n, "temperature": temperature})
        g = torch.Generator().manual_seed(len(self.requests))
        completions = [
            torch.randint(10, self.vocab, (max_tokens,), generator=g).tolist()
            for _ in prompts
            for _ in range(n)
        ]
        return {
            "prompt_ids": [list(p) for p in prompts],
            "completion_ids": completions,
            "logprobs": [[[-1.0] for _ in c] for c in completions],
        }


def test_vllm_server_mode_generates_each_row_on_its_own(tmp_path):
    """TRL's own server-mode path (VLLMGeneration.generate, mode 'server') with a fake server:
    it sends prompts[::num_generations] with n=num_generations, which would break ragged groups;
    the adapter asks for n=1 per row, at the round's temperature."""
    from trl.generation.vllm_generation import VLLMGeneration

    trainer, rec, _ = _trainer(tmp_path, ENTROPY, max_steps=4)
    server = FakeVLLMServer(len(trainer.processing_class))
    vg = object.__new__(VLLMGeneration)  # no server to connect to: TRL's __init__ would
    vg.__dict__.update(
        mode="server",
        accelerator=trainer.accelerator,
        vllm_client=server,
        enable_sleep_mode=False,
        temperature=trainer.temperature,
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        max_completion_length=trainer.max_completion_length,
        logprobs=0,
        structured_outputs_regex=None,
        generation_kwargs={},
    )
    vg.sync_weights = lambda: None
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, vg, -1
    trainer.train()
    assert [r["n"] for r in server.requests] == [1] * 4
    assert [r["prompts"] for r in server.requests] == [16] * 4
    temps = [r["temperature"] for r in server.requests]
    assert temps[:2] == [1.0, 1.0] and temps[3] < temps[2] < 1.0
    for call, rnd in zip(rec.calls, trainer.rounds, strict=True):
        want = {p: c for p, c in zip(rnd["prompts"], rnd["counts"], strict=True) if c > 0}
        assert dict(collections.Counter(call["prompts"])) == want


def test_temperature_cell_is_found_through_accelerates_mixed_precision_wrappers():
    """With bf16/fp16, accelerate's prepare_model wraps the forward TRL patched (as below): the
    adapter must still reach, and rewrite, the temperature the fused head divides by."""
    import types

    from accelerate.utils import convert_outputs_to_fp32
    from trl.trainer.utils import add_fused_lm_head

    from e3rl.integrations.trl.trainer import _TemperatureCell

    model, _, _, _ = tiny_model_and_prompts()
    with torch.no_grad():  # peaked logits, so that the temperature matters
        model.get_output_embeddings().weight.mul_(30.0)
    add_fused_lm_head(model, temperature=0.7)
    model._original_forward = model.forward
    wrapped = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward.__func__)
    model.forward = types.MethodType(wrapped, model)
    model.forward = types.MethodType(convert_outputs_to_fp32(model.forward.__func__), model)
    cell = _TemperatureCell(model, "policy")
    assert cell.get() == 0.7
    cell.set(0.5)
    ids = torch.tensor([[5, 6, 7, 8]])
    labels = ids.clone()
    with torch.no_grad():
        fused = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs[0]
        logits = model(input_ids=ids).logits[0, :-1].float()

    def logp(t):
        return torch.log_softmax(logits / t, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)

    assert (logp(0.5) - logp(0.7)).abs().max() > 1.0  # the check below can tell them apart
    torch.testing.assert_close(fused.float(), logp(0.5), atol=0.2, rtol=0)  # bf16 autocast


def test_a_model_without_trls_fused_head_is_a_clear_error():
    from e3rl.integrations.trl.trainer import _TemperatureCell

    model, _, _, _ = tiny_model_and_prompts()
    with pytest.raises(RuntimeError, match="keeps no 'temperature' closure"):
        _TemperatureCell(model, "policy")


def test_a_run_learns_and_the_controller_holds_the_entropy(tmp_path):
    """A learnable reward (the share of digits in the completion; a random policy writes about
    5 %): E3GRPOTrainer raises it several-fold in 20 steps, and as the policy sharpens, the
    controller raises the temperature to keep the entropy at its warm-up target."""

    def digits(completions, **_):
        return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

    e3rl = {
        "budget": {"allocator": "value", "n_min": 0, "n_max": 12, "success_threshold": 0.3},
        "temperature_control": "entropy",
        "temperature": {"warmup_steps": 2},
    }
    model, tok, prompts, _ = tiny_model_and_prompts()
    trainer = E3GRPOTrainer(
        model=model,
        processing_class=tok,
        reward_funcs=[digits],
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        args=grpo_config(tmp_path, max_steps=20, learning_rate=3e-2),
        e3rl=e3rl,
    )
    trainer.train()
    steps = [h for h in trainer.state.log_history if "loss" in h]
    rewards = [h["reward"] for h in steps]
    assert sum(rewards[-5:]) > 3 * sum(rewards[:5]), rewards
    assert steps[-1]["e3rl/temperature"] > 1.1
