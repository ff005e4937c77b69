"""E3Control against the parts it wires, driven by hand the way `e3rl train` used to inline them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3rl.config import (
    BudgetConfig,
    ConfigError,
    LengthBiasConfig,
    TemperatureConfig,
    check_method,
)
from e3rl.control import (
    DifficultyTracker,
    E3Control,
    EntropyTemperatureController,
    allocator_from_config,
    length_biased_rewards,
    rank_allocation,
)
from e3rl.metrics import group_outcome_fractions

V = 384


def _control(n=4, budget=None, length_bias=None, temperature=None, seed=0, total_steps=10):
    return E3Control.from_config(
        BudgetConfig(**(budget or {})),
        LengthBiasConfig(**(length_bias or {})),
        n,
        1.0,
        V,
        total_steps,
        seed,
        None if temperature is None else TemperatureConfig(**temperature),
    )


def _rollouts(plan, p_right, rng):
    """Owners and 0/1 rewards: prompt k is right with probability p_right[k]."""
    owners, rewards = [], []
    for pid, c in zip(plan.prompt_ids, plan.counts, strict=True):
        owners += [pid] * c
        rewards += [float(rng.random() < p_right[pid]) for _ in range(c)]
    return owners, rewards


def _plain_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_only(v) for v in value)
    return value is None or type(value) in (int, float, str, bool)


@settings(max_examples=25, deadline=None)
@given(
    allocator=st.sampled_from(["uniform", "rank", "value"]),
    seed=st.integers(0, 10_000),
    mu=st.sampled_from([0.0, 0.05]),
)
def test_control_equals_the_parts_wired_by_hand(allocator, seed, mu):
    """The old inline wiring of `e3rl train` (tracker, allocator, rng, controller, length bias)
    is the reference: same counts, shaped rewards, temperatures and metrics, step by step."""
    budget = {"allocator": allocator, "n_low": 2, "n_high": 8, "widen_every": 2}
    budget.update({"n_min": 0, "n_max": 8, "recheck_prob": 0.3})
    lb = {"mu": mu, "threshold": 0.5}
    temp = {"warmup_steps": 1, "anneal": True}
    ctl = _control(4, budget, lb, temp, seed=seed)
    b = BudgetConfig(**budget)
    tracker = DifficultyTracker(b.success_threshold, b.decay, b.rank_refresh)
    alloc = allocator_from_config(b, 4)
    rng = np.random.default_rng(seed)
    ref_t = EntropyTemperatureController.from_config(TemperatureConfig(**temp), 1.0, V, 10)
    world = np.random.default_rng(seed + 1)
    ids = [f"p{k}" for k in range(6)]
    p_right = {pid: k / 5 for k, pid in enumerate(ids)}
    ctl.register(ids)
    tracker.register(ids)
    for step in range(1, 9):
        batch = [ids[(step + j) % 6] for j in range(3)]
        ranks = tracker.ranks(batch)
        counts = alloc.allocate(batch, 12, tracker, 0, step, rng)
        temperature = ref_t.temperature
        plan = ctl.plan(batch)
        assert (plan.counts, plan.temperature, plan.step) == (counts, temperature, step)
        owners, raw = _rollouts(plan, p_right, world)
        lengths = [int(x) for x in world.integers(1, 30, len(owners))]
        rank_of = dict(zip(batch, ranks.tolist(), strict=True))
        want = raw
        if mu > 0 and tracker.num_seen > 0:
            want = length_biased_rewards(raw, lengths, [rank_of[p] for p in owners], mu, 0.5)
        entropy = float(world.uniform(0.5, 2.0))
        shaped, m = ctl.observe(owners, raw, lengths, entropy)
        tracker.update(owners, raw)
        ref_t.update(entropy)
        target = ref_t.last_target  # what the rule used: None only during warm-up
        assert (target is None) == (step <= 1)
        assert shaped == want
        assert m["temperature"] == temperature and m["next_temperature"] == ref_t.temperature
        assert m["target_entropy"] == target and m["entropy"] == entropy
        assert m["alloc_min"] == min(counts) and m["alloc_max"] == max(counts)
        assert m["reward_mean"] == float(np.mean(want))
        if raw:
            for k, v in group_outcome_fractions(raw, owners).items():
                assert m[k] == v
        assert ctl.tracker.ranks(ids).tolist() == tracker.ranks(ids).tolist()


def test_plan_follows_the_rank_rule_and_keeps_the_budget():
    ctl = _control(4, {"allocator": "rank", "n_low": 2, "n_high": 8, "widen_every": 1})
    ids = [f"p{i}" for i in range(6)]
    ctl.register(ids)
    world = np.random.default_rng(0)
    for _ in range(2):
        plan = ctl.plan(ids)
        owners, rewards = _rollouts(plan, {p: 1 - int(p[1:]) / 5 for p in ids}, world)
        ctl.observe(owners, rewards, [3] * len(owners), 1.0)
    plan = ctl.plan(ids)
    assert sum(plan.counts) == 24 and plan.step == 3
    # independent truth: the rank rule on the tracker's ranks, bounds widened at step 3
    assert ctl.allocator.bounds(0, 3) == (2, 8)
    assert plan.counts == rank_allocation(ctl.tracker.ranks(ids), 24, 2, 8)
    assert plan.counts[5] > plan.counts[0]
    assert sum(ctl.plan(ids, budget=30).counts) == 30


def test_length_bias_waits_for_history_and_says_so_once():
    ctl = _control(2, length_bias={"mu": 0.01, "threshold": 0.5})
    ids = ["easy", "hard"]
    owners = ["easy", "easy", "hard", "hard"]
    ctl.plan(ids)
    shaped, m = ctl.observe(owners, [1, 1, 0, 1], [10, 50, 10, 10], 1.0)
    assert shaped == [1, 1, 0, 1] and ctl.length_bias_skipped == 1
    assert ctl.notices() == ["length bias: no difficulty history yet, not applied this step"]
    assert ctl.notices() == []
    plan = ctl.plan(ids)
    ranks = dict(zip(ids, plan.ranks, strict=True))
    assert ranks["easy"] < 0.5 <= ranks["hard"]
    shaped, m = ctl.observe(owners, [1, 1, 0, 1], [10, 50, 10, 10], 1.0)
    assert shaped == pytest.approx([1 / 1.1, 1 / 1.5, 0.0, 1.0])
    assert m["length_bias_changed"] == 2 and m["reward_raw_mean"] == 0.75
    assert m["frac_all_correct"] == 0.5 and m["frac_mixed"] == 0.5
    assert m["accuracy"] == 0.75 and m["rollouts"] == 4


def test_observe_entropy_drives_the_controller_like_e3rl_train():
    ctl = _control(temperature={"warmup_steps": 1})
    ref = EntropyTemperatureController(1.0, V, warmup_steps=1, total_steps=10)
    for h in [2.0, 1.5, 1.0, math.nan, 2.5]:
        m = ctl.observe_entropy(h)
        ref.update(h)
        assert ctl.temperature == ref.temperature == m["next_temperature"]
    assert m["temperature_invalid_entropies"] == 1 and ctl.steps == 5
    fixed = _control()
    assert fixed.observe_entropy(1.0)["next_temperature"] == 1.0 and fixed.target_entropy is None


def test_epochs_close_in_the_tracker_and_refresh_epoch_ranks():
    ctl = _control(2, {"allocator": "rank", "rank_refresh": "epoch", "n_low": 1, "n_high": 3})
    ids = ["a", "b"]
    before = ctl.plan(ids).ranks
    ctl.observe(["a", "a", "b", "b"], [1, 1, 0, 0], [1] * 4, 1.0)
    assert ctl.plan(ids).ranks == before  # ranks refresh only at epoch end
    ctl.observe(["a", "a", "b", "b"], [1, 1, 0, 0], [1] * 4, 1.0)
    ctl.set_epoch(2)
    assert ctl.tracker.epochs == 2 and ctl.epoch == 2
    plan = ctl.plan(ids)
    assert plan.epoch == 2 and plan.ranks[0] < plan.ranks[1]
    assert plan.counts == [1, 3]  # epoch 2 widens (2, 2) to (1, 3); the hard prompt gets 3


def test_state_round_trips_through_json_with_plain_types_only():
    kw = {"budget": {"allocator": "value", "n_min": 0, "n_max": 8}, "temperature": {}}
    ctl = _control(4, **kw)
    ids = [f"p{i}" for i in range(4)]
    world = np.random.default_rng(3)
    for _ in range(3):
        owners, rewards = _rollouts(ctl.plan(ids), {p: 0.5 for p in ids}, world)
        ctl.observe(owners, rewards, [1] * len(owners), float(world.uniform(0.5, 1.5)))
    ctl.set_epoch(1)
    state = ctl.state_dict()
    assert _plain_only(state)
    other = _control(4, **kw)
    other.load_state_dict(json.loads(json.dumps(state)))
    assert other.state_dict() == state
    assert other.temperature == ctl.temperature
    for _ in range(3):  # the rng stream continues too: the value allocator re-checks draw from it
        assert other.plan(ids).counts == ctl.plan(ids).counts


def test_load_refuses_another_format():
    state = _control().state_dict()
    with pytest.raises(ValueError, match="format 7.*checkpoint format changed"):
        _control().load_state_dict({**state, "format": 7})


def test_observe_rejects_rollouts_it_cannot_place():
    ctl = _control(2)
    with pytest.raises(KeyError, match="not in this step's plan"):
        ctl.observe(["x"], [1.0], [1], 1.0)
    ctl.plan(["a"])
    with pytest.raises(KeyError, match=r"\['b'\]"):
        ctl.observe(["a", "b"], [1.0, 0.0], [1, 1], 1.0)
    with pytest.raises(ValueError, match="2 prompt ids, 1 rewards"):
        ctl.observe(["a", "a"], [1.0], [1, 1], 1.0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        E3Control(DifficultyTracker(), allocator_from_config(BudgetConfig(), 1), -1)


def test_method_checks_name_the_callers_keys():
    rank = BudgetConfig(allocator="rank")
    with pytest.raises(ConfigError, match=r"rollout.n=2 is invalid.*\[budget.n_low"):
        check_method(rank, 2, "none", TemperatureConfig(), "rollout.n", "", "x")
    with pytest.raises(ConfigError, match=r"^a.rollout.n=20 .*\[e3rl.budget.n_min"):
        check_method(
            BudgetConfig(allocator="value"),
            20,
            "none",
            TemperatureConfig(),
            "a.rollout.n",
            "e3rl.",
            "x",
        )
    with pytest.raises(ConfigError, match="e3rl.temperature.anneal=true needs e3rl.tc=entropy"):
        check_method(
            BudgetConfig(), 4, "none", TemperatureConfig(anneal=True), "n", "e3rl.", "e3rl.tc"
        )
    check_method(rank, 8, "entropy", TemperatureConfig(anneal=True), "n", "", "x")
    with pytest.raises(ConfigError, match=r"e3rl.budget.skip_below=0.2 is invalid with TRL's"):
        check_method(
            BudgetConfig(skip_below=0.2),
            8,
            "none",
            TemperatureConfig(),
            "n",
            "e3rl.",
            "x",
            fixed_batch="TRL's GRPOTrainer",
        )
    check_method(BudgetConfig(skip_below=0.2), 8, "none", TemperatureConfig(), "n", "", "x")


def test_prior_fit_reaches_the_allocator_and_the_forecast():
    """budget.prior_fit: the plan and the logged forecast both use the fitted prior."""
    from e3rl.control.allocation import fit_beta_prior
    from e3rl.control.selection import mixed_shares

    budget = {"allocator": "value", "n_min": 0, "n_max": 16, "recheck_prob": 0.0}
    fit, flat = _control(8, {**budget, "prior_fit": True}), _control(8, budget)
    assert fit.allocator.prior_fit and not flat.allocator.prior_fit
    world = np.random.default_rng(3)
    ids = [f"p{k}" for k in range(64)]
    p_right = {pid: float(world.beta(0.3, 0.3)) for pid in ids}
    for ctl in (fit, flat):
        ctl.register(ids)
        for step in range(4):  # every prompt seen once, 8 rollouts each
            plan = ctl.plan(ids[16 * step : 16 * step + 16])
            owners, raw = _rollouts(plan, p_right, np.random.default_rng(step))
            ctl.observe(owners, raw, [1] * len(raw), 1.0)
    prior = fit_beta_prior(*fit.tracker.counts())
    assert prior[0] < 1 and prior[1] < 1  # the population is U-shaped
    plan = fit.plan(ids[:16])
    s, f = fit.tracker.successes_failures(ids[:16])
    want, _ = mixed_shares(prior[0] + s, prior[1] + f, plan.counts, 8)
    _, m = fit.observe(*_rollouts(plan, p_right, world), [1] * 128, 1.0)
    assert m["exp_frac_rollouts_mixed"] == pytest.approx(want)
    assert plan.counts != flat.plan(ids[:16]).counts
