"""Selection before rollout: E3Control.select over more candidates than it rolls, the pool of
deferred prompts, the chooser against brute force, the data stream that offers candidates."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3rl.config import BudgetConfig, Config, ConfigError, LengthBiasConfig, check_selection
from e3rl.config_io import load_config
from e3rl.control import E3Control, expected_mixed, value_allocation
from e3rl.control.allocation import group_values, rank_allocation
from e3rl.control.allocators import UniformAllocator, ValueAllocator
from e3rl.control.selection import (
    CandidatePool,
    choose_counts,
    mixed_shares,
)
from e3rl.control.tracker import DifficultyTracker
from e3rl.data import Batches, PromptStream


def _control(allocator, n, seed=0, **budget):
    b = BudgetConfig(allocator=allocator, **budget)
    return E3Control.from_config(b, LengthBiasConfig(), n, 1.0, 100, 50, seed)


def _simulate(ctl, num_prompts, batch, candidates, steps, p_right, seed):
    """Drive `ctl` the way `e3rl train` does: deferred candidates first, fresh ones from a
    PromptStream; returns the per-step (candidate ids, counts, pending before the step)."""
    stream = PromptStream(num_prompts, seed, True)
    rng = np.random.default_rng(seed + 1)
    out = []
    for _ in range(steps):
        pending = ctl.pending()
        idx = stream.draw(candidates, [int(p) for p in pending])
        ctl.set_epoch(stream.epoch)
        ids = [str(i) for i in idx]
        plan = ctl.select(ids, ctl.n * batch)
        owners = [
            pid for pid, c in zip(plan.prompt_ids, plan.counts, strict=True) for _ in range(c)
        ]
        rewards = [float(rng.random() < p_right[int(o)]) for o in owners]
        ctl.observe(owners, rewards, [3] * len(owners), 1.0)
        out.append((ids, plan.counts, pending))
    return out


@settings(max_examples=40, deadline=None)
@given(
    allocator=st.sampled_from(["uniform", "rank", "value"]),
    batch=st.integers(2, 6),
    n=st.integers(2, 6),
    extra=st.integers(1, 6),
    max_deferrals=st.integers(1, 3),
    recheck=st.sampled_from([0.0, 0.2]),
    n_min=st.sampled_from([0, 1, 2, 3]),
    seed=st.integers(0, 1000),
)
def test_selection_invariants(allocator, batch, n, extra, max_deferrals, recheck, n_min, seed):
    """Budget exact, counts within bounds, skipped prompts come back first, no prompt deferred
    more than max_deferrals times in a row, and the same seeds give the same run."""
    if allocator in ("uniform", "rank"):
        candidates = batch + min(extra, batch)
    else:
        n_min = min(n_min, n)
        candidates = min(batch + extra, n * batch // max(n_min, 2))
    if candidates <= batch:
        return
    check_selection(allocator, candidates, batch, n, n_min)  # the settings are valid ones
    num = candidates + 7
    budget = {"max_deferrals": max_deferrals, "recheck_prob": recheck}
    if allocator == "value":
        budget.update(n_min=n_min, n_max=n + 3)
    if allocator == "rank":
        budget.update(n_low=max(n - 1, 1), n_high=n + 2, widen_every=3)
    p_right = np.random.default_rng(seed).choice([0.0, 0.2, 0.5, 0.9, 1.0], size=num)
    runs = [
        _simulate(_control(allocator, n, seed, **budget), num, batch, candidates, 12, p_right, seed)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]  # deterministic given the seeds
    streak: dict[str, int] = {}
    prev_skipped: list[str] = []
    for ids, counts, pending in runs[0]:
        assert sum(counts) == n * batch
        assert len(ids) == len(set(ids)) == candidates
        assert ids[: len(pending)] == pending == prev_skipped  # deferred ones come back first
        rolled = [c for c in counts if c > 0]
        if allocator == "uniform":
            assert rolled == [n] * batch
        elif allocator == "rank":
            assert len(rolled) == batch
        else:
            assert all(max(n_min, 1) <= c <= n + 3 for c in rolled)
        for pid, c in zip(ids, counts, strict=True):
            streak[pid] = streak.get(pid, 0) + 1 if c == 0 else 0
            assert streak[pid] <= max_deferrals, (pid, streak[pid])
            if c > 0:
                streak.pop(pid)
        prev_skipped = [pid for pid, c in zip(ids, counts, strict=True) if c == 0]


def _brute_value(s, f, budget, n_min, n_max, forced, prior=(1.0, 1.0), objective="mixed"):
    """Best summed group value over every count vector (0 or [n_min, n_max]; forced ones at
    least max(n_min, 2)), by enumeration."""
    v = group_values(prior[0] + np.asarray(s), prior[1] + np.asarray(f), n_max, objective)
    best = -math.inf
    choices = [
        [c for c in range(n_max + 1) if (c >= max(n_min, 2) if m else c == 0 or c >= n_min)]
        for m in forced
    ]
    for counts in itertools.product(*choices):
        if sum(counts) == budget:
            best = max(best, sum(v[i, c] for i, c in enumerate(counts)))
    return best


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    k=st.integers(2, 5),
    n_min=st.integers(0, 2),
    objective=st.sampled_from(["mixed", "knapsack", "mixed_rollouts"]),
)
def test_value_choice_is_the_brute_force_optimum(data, k, n_min, objective):
    s = data.draw(st.lists(st.integers(0, 6), min_size=k, max_size=k))
    f = data.draw(st.lists(st.integers(0, 6), min_size=k, max_size=k))
    forced = np.array(data.draw(st.lists(st.booleans(), min_size=k, max_size=k)))
    n_max = 5
    lo_total = int(forced.sum()) * max(n_min, 2)
    budget = data.draw(st.integers(max(lo_total, 1), min(n_max * k, 12)))
    if lo_total > budget:
        return
    tracker = DifficultyTracker()
    ids = [f"p{i}" for i in range(k)]
    tracker.register(ids)
    for pid, si, fi in zip(ids, s, f, strict=True):
        tracker.update([pid] * (si + fi), [1.0] * si + [0.0] * fi)
    alloc = ValueAllocator(n_min=n_min, n_max=n_max, objective=objective)
    best = _brute_value(s, f, budget, n_min, n_max, forced, objective=objective)
    if best == -math.inf:  # no count vector spends the budget (e.g. budget 1, n_min 2)
        with pytest.raises(ValueError, match="cannot be spent"):
            choose_counts(alloc, ids, budget, forced, tracker, 0, 1, (1.0, 1.0), objective)
        return
    counts = choose_counts(alloc, ids, budget, forced, tracker, 0, 1, (1.0, 1.0), objective)
    assert sum(counts) == budget
    assert all(c >= max(n_min, 2) for c, m in zip(counts, forced, strict=True) if m)
    assert all(c == 0 or n_min <= c <= n_max for c in counts)
    v = group_values(1.0 + np.asarray(s), 1.0 + np.asarray(f), n_max, objective)
    got = sum(v[i, c] for i, c in enumerate(counts))
    assert got == pytest.approx(
        _brute_value(s, f, budget, n_min, n_max, forced, objective=objective)
    )


def test_uniform_choice_takes_forced_then_the_highest_expected_mixed():
    """Hand-made posteriors: p3 is forced; of the rest, P(mixed | 4) is highest for the
    uncertain p1 (2 right of 4) and the unseen p0, lowest for the solved p2."""
    tracker = DifficultyTracker()
    ids = ["p0", "p1", "p2", "p3", "p4"]
    tracker.register(ids)
    tracker.update(["p1"] * 4 + ["p2"] * 8 + ["p4"] * 8, [1, 1, 0, 0] + [1.0] * 8 + [0.0] * 8)
    forced = np.array([False, False, False, True, False])
    counts = choose_counts(UniformAllocator(n=4), ids, 12, forced, tracker, 0, 1, (1, 1), "mixed")
    v = group_values(*tracker.beliefs(ids, (1, 1)), 4)[:, 4]
    assert v[1] > v[0] > v[2] and v[0] > v[4]
    assert counts == [4, 4, 0, 4, 0]


def test_rank_choice_is_the_paper_rule_on_the_chosen():
    ctl = _control("rank", 4, n_low=2, n_high=6, widen_every=1)
    ids = [f"p{i}" for i in range(8)]
    ctl.register(ids)
    rng = np.random.default_rng(3)
    for pid in ids:  # give every prompt some history
        ctl.tracker.update([pid] * 6, (rng.random(6) < rng.random()).astype(float).tolist())
    ctl.steps = 4  # bounds widened: (2, 6)
    plan = ctl.select(ids, 16)
    chosen = [i for i, c in enumerate(plan.counts) if c > 0]
    assert len(chosen) == 4
    ranks = ctl.tracker.ranks([ids[i] for i in chosen])
    assert [plan.counts[i] for i in chosen] == rank_allocation(ranks, 16, 2, 6)


def test_mixed_shares_by_hand():
    # Beta(1, 1): P(mixed | c) = 1 - 2 / (c + 1): 0 at c=1, 1/3 at 2, 1/2 at 3.
    chosen, uniform = mixed_shares([1, 1], [1, 1], [3, 1], 2)
    assert chosen == pytest.approx((3 * 0.5 + 1 * 0.0) / 4)
    assert uniform == pytest.approx(1 / 3)
    # A solved prompt (Beta(1, 11)) against an unseen one, n = 2: E[p^2] = 1*2/(12*13) etc.
    a, b = 1.0, 11.0
    p_mixed = 1 - a * (a + 1) / ((a + b) * (a + b + 1)) - b * (b + 1) / ((a + b) * (a + b + 1))
    _, uniform = mixed_shares([1, 1], [11, 1], [2, 2], 2)
    assert uniform == pytest.approx((p_mixed + 1 / 3) / 2)


def test_mixed_rollouts_objective_is_c_times_p_mixed():
    s, f = [3.0, 0.0, 9.0], [2.0, 0.0, 1.0]
    for c in range(0, 9):
        counts = [c, c, c]
        assert expected_mixed(s, f, counts, objective="mixed_rollouts") == pytest.approx(
            c * expected_mixed(s, f, counts, objective="mixed")
        )


@settings(max_examples=30, deadline=None)
@given(data=st.data(), k=st.integers(2, 4), n_min=st.integers(0, 2))
def test_value_allocation_mixed_rollouts_is_exact(data, k, n_min):
    """Not concave, so solved by dynamic programming even with n_min >= 1: the brute-force
    optimum over [n_min, n_max]^k."""
    s = data.draw(st.lists(st.integers(0, 5), min_size=k, max_size=k))
    f = data.draw(st.lists(st.integers(0, 5), min_size=k, max_size=k))
    n_max = 5
    budget = data.draw(st.integers(n_min * k, n_max * k))
    counts = value_allocation(s, f, budget, n_min, n_max, objective="mixed_rollouts")
    best = max(
        expected_mixed(s, f, list(c), objective="mixed_rollouts")
        for c in itertools.product(range(n_min, n_max + 1), repeat=k)
        if sum(c) == budget
    )
    assert sum(counts) == budget
    assert expected_mixed(s, f, counts, objective="mixed_rollouts") == pytest.approx(best)


def test_select_refuses_a_candidate_list_without_the_pending_prompts():
    ctl = _control("value", 4, n_min=0, n_max=8, recheck_prob=0.0)
    plan = ctl.select([f"p{i}" for i in range(8)], 16)
    skipped = [p for p, c in zip(plan.prompt_ids, plan.counts, strict=True) if c == 0]
    assert skipped and ctl.pending() == skipped
    with pytest.raises(ValueError, match="not offered again"):
        ctl.select([f"q{i}" for i in range(8)], 16)
    with pytest.raises(ValueError, match="distinct"):
        ctl.select([*skipped, *skipped], 16)


def test_state_round_trips_through_json_mid_run():
    """Saved with prompts pending and restored into a fresh control: the same next plans."""
    p_right = np.random.default_rng(0).random(30)
    a = _control("value", 4, seed=5, n_min=0, n_max=8, recheck_prob=0.3, max_deferrals=1)
    _simulate(a, 30, 4, 8, 5, p_right, 9)
    assert a.pending()
    state = json.loads(json.dumps(a.state_dict()))
    b = _control("value", 4, seed=99, n_min=0, n_max=8, recheck_prob=0.3, max_deferrals=1)
    b.load_state_dict(state)
    assert b.pending() == a.pending() and b.summary() == a.summary()
    ids = [*a.pending(), *[f"{i}" for i in range(20, 30) if str(i) not in a.pending()]][:8]
    assert a.select(ids, 16) == b.select(ids, 16)


def test_a_state_without_selection_loads_with_nothing_pending():
    a = _control("value", 4, n_min=0, n_max=8)
    a.select([f"p{i}" for i in range(8)], 16)
    state = a.state_dict()
    del state["pool"], state["totals"]
    b = _control("value", 4, n_min=0, n_max=8)
    b.load_state_dict(state)
    assert b.pending() == [] and b.summary()["prompts_rolled"] == 0


def test_summary_counts_and_shares():
    ctl = _control("value", 4, n_min=0, n_max=8, recheck_prob=0.0)
    plan = ctl.select([f"p{i}" for i in range(8)], 16)
    owners = [p for p, c in zip(plan.prompt_ids, plan.counts, strict=True) for _ in range(c)]
    # every group mixed: alternate right and wrong within each group
    rewards = [float(k % 2) for k in range(len(owners))]
    _, metrics = ctl.observe(owners, rewards, [1] * len(owners), 1.0)
    rolled = sum(c > 0 for c in plan.counts)
    assert metrics["prompts_rolled"] == rolled and metrics["prompts_skipped"] == 8 - rolled
    summary = ctl.summary()
    assert summary["frac_rollouts_mixed"] == 1.0
    assert summary["prompts_rolled"] == rolled and summary["prompts_skipped"] == 8 - rolled
    chosen, uniform = mixed_shares([1] * 8, [1] * 8, plan.counts, 4)
    assert summary["exp_frac_rollouts_mixed"] == pytest.approx(chosen)
    assert summary["exp_frac_rollouts_mixed_uniform"] == pytest.approx(uniform)


def test_pool_keeps_order_and_counts():
    pool = CandidatePool(2)
    pool.settle(["a", "b", "c"], [0, 3, 0])
    assert pool.pending() == ["a", "c"] and pool.deferrals(["a", "c", "x"]) == [1, 1, 0]
    pool.settle(["a", "c", "d"], [0, 2, 0])
    assert pool.pending() == ["a", "d"] and pool.deferrals(["a", "d"]) == [2, 1]
    with pytest.raises(ValueError, match="max_deferrals"):
        CandidatePool(0)


# ---- the data stream


def test_stream_without_deferrals_is_the_batches_order():
    """Drawn k at a time with nothing given first, the stream is Batches' epoch order."""
    stream = PromptStream(12, 7, True)
    drawn = [i for _ in range(6) for i in stream.draw(4, [])]
    batches = Batches(12, 4, 7, True)
    assert drawn == [i for _ in range(6) for i in batches.next()[0]]
    assert stream.epoch == batches.epoch == 1


def test_stream_puts_the_given_first_and_never_offers_a_key_twice():
    stream = PromptStream(6, 0, False)  # order 0..5
    assert stream.draw(3, []) == [0, 1, 2]
    assert stream.draw(4, [1]) == [1, 3, 4, 5]
    # epoch 1 starts at 0; 1 is given first, so its turn (the second) is skipped
    assert stream.draw(4, [1, 2]) == [1, 2, 0, 3]
    assert stream.epoch == 1 and stream.position == 4
    # two records of one prompt (same key): only the first one drawn is offered
    keyed = PromptStream(4, 0, False)
    assert keyed.draw(3, [], key=lambda i: i // 2 * 2 if i < 2 else i) == [0, 2, 3]
    with pytest.raises(ValueError, match="distinct"):
        PromptStream(3, 0, False).draw(5, [])


# ---- settings


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.candidates_per_step=8"], "candidates_per_step=8 is invalid"),
        (["data.candidates_per_step=40"], "at most 2 x data.batch_size = 32"),
        (
            ["budget.allocator=value", "budget.n_min=0", "data.candidates_per_step=80"],
            "at most 64 candidates",
        ),
        (
            ["budget.allocator=value", "budget.n_min=4", "data.candidates_per_step=40"],
            "at most 32 candidates",
        ),
        (["budget.max_deferrals=0"], "max_deferrals=0 is invalid"),
    ],
)
def test_bad_selection_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, ["data.batch_size=16", "rollout.n=8", *overrides])


def test_default_settings_select_nothing():
    cfg = Config().validate()
    assert cfg.data.candidates_per_step == 0 and cfg.budget.max_deferrals == 2
