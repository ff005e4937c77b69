"""The driver-side control of the verl integration; needs no verl (runs in the main venv)."""

from __future__ import annotations

import json
import math

import pytest

from e3rl.budget import rank_allocation
from e3rl.config import ConfigError
from e3rl.integrations.verl.control import E3rlControl, E3rlSettings, prompt_id_of
from e3rl.temperature import EntropyTemperatureController


def _control(n=4, **section):
    settings = E3rlSettings.from_mapping(section)
    return E3rlControl(settings, n=n, initial_temperature=1.0, vocab_size=384, total_steps=10)


def test_prompt_id_is_stable_and_content_based():
    a = [{"role": "user", "content": "1+2="}]
    assert prompt_id_of(a) == prompt_id_of([{"content": "1+2=", "role": "user"}])
    assert prompt_id_of(a) != prompt_id_of([{"role": "user", "content": "1+3="}])
    assert prompt_id_of("plain text") == prompt_id_of("plain text")


def test_settings_reject_unknown_keys_and_bad_values_naming_them():
    with pytest.raises(ConfigError, match="unknown keys \\['alocator'\\] in e3rl.budget"):
        E3rlSettings.from_mapping({"budget": {"alocator": "rank"}})
    with pytest.raises(ConfigError, match="e3rl.budget.decay"):
        E3rlSettings.from_mapping({"budget": {"decay": 0}})
    with pytest.raises(ConfigError, match="e3rl.temperature_control='hot'"):
        E3rlSettings.from_mapping({"temperature_control": "hot"})
    with pytest.raises(ConfigError, match="rollout.n=2 is invalid"):
        _control(n=2, budget={"allocator": "rank"})  # below n_low=4


def test_allocation_keeps_the_budget_and_follows_the_rank_rule():
    ctl = _control(n=4, budget={"allocator": "rank", "n_low": 2, "n_high": 8, "widen_every": 1})
    ids = [f"p{i}" for i in range(6)]
    ctl.register(ids)
    # p0 always right, p5 always wrong, the rest in between
    for _ in range(2):
        a = ctl.allocate(ids)
        rewards, owners = [], []
        for pid, c in zip(a.prompt_ids, a.counts, strict=True):
            k = int(pid[1:])
            owners += [pid] * c
            rewards += [1.0 if j < c * (5 - k) / 5 else 0.0 for j in range(c)]
        ctl.observe(owners, rewards, [3] * len(owners), [0.0] * len(owners))
        ctl.end_step(1.0)
    a = ctl.allocate(ids)
    assert sum(a.counts) == 4 * 6
    # independent truth: e3rl's rank rule on the tracker's ranks with the widened bounds
    n_min, n_max = ctl.allocator.bounds(0, ctl.step)
    assert a.counts == rank_allocation(ctl.tracker.ranks(ids), 24, n_min, n_max)
    assert a.counts[5] > a.counts[0]


def test_observe_applies_length_bias_to_easy_correct_answers_only_after_history():
    ctl = _control(n=2, length_bias={"mu": 0.01, "threshold": 0.5})
    ids = ["easy", "hard"]
    ctl.register(ids)
    shaped, m = ctl.observe(
        ["easy", "easy", "hard", "hard"], [1, 1, 0, 1], [10, 50, 10, 10], [0.0] * 4
    )
    assert shaped == [1, 1, 0, 1] and ctl.length_bias_skipped == 1  # nothing seen yet
    ranks = dict(zip(ids, ctl.tracker.ranks(ids).tolist(), strict=True))
    assert ranks["easy"] < 0.5 <= ranks["hard"]
    owners = ["easy", "easy", "hard", "hard"]
    shaped, m = ctl.observe(owners, [1, 1, 0, 1], [10, 50, 10, 10], [ranks[p] for p in owners])
    assert shaped == pytest.approx([1 / 1.1, 1 / 1.5, 0.0, 1.0])
    assert m["e3rl/length_bias/changed"] == 2
    assert m["e3rl/groups/all_correct_frac"] == 0.5 and m["e3rl/groups/mixed_frac"] == 0.5


def test_end_step_drives_the_controller_like_e3rl_train():
    ctl = _control(temperature_control="entropy", temperature={"warmup_steps": 1})
    ref = EntropyTemperatureController(1.0, 384, warmup_steps=1, total_steps=10)
    for h in [2.0, 1.5, 1.0, math.nan, 2.5]:
        m = ctl.end_step(h)
        ref.update(h)
        assert ctl.temperature == ref.temperature == m["e3rl/next_temperature"]
    assert m["e3rl/temperature_invalid_entropies"] == 1
    assert ctl.temperature != 1.0


def test_state_round_trips_through_json():
    ctl = _control(
        n=4, budget={"allocator": "value", "n_min": 0, "n_max": 8}, temperature_control="entropy"
    )
    ids = [f"p{i}" for i in range(4)]
    ctl.register(ids)
    a = ctl.allocate(ids)
    owners = [p for p, c in zip(a.prompt_ids, a.counts, strict=True) for _ in range(c)]
    ctl.observe(
        owners, [float(i % 2) for i in range(len(owners))], [1] * len(owners), [0.0] * len(owners)
    )
    ctl.end_step(1.2)
    ctl.end_step(0.9)
    state = json.loads(json.dumps(ctl.state_dict()))
    other = _control(
        n=4, budget={"allocator": "value", "n_min": 0, "n_max": 8}, temperature_control="entropy"
    )
    other.load_state_dict(state)
    assert other.temperature == ctl.temperature
    assert other.allocate(ids).counts == ctl.allocate(ids).counts


def _selecting(batch=4, candidates=8, **budget):
    settings = E3rlSettings.from_mapping(
        {"candidates_per_step": candidates, "budget": {"allocator": "value", "n_min": 0, **budget}}
    )
    return E3rlControl(
        settings, n=4, initial_temperature=1.0, vocab_size=384, total_steps=10, batch_size=batch
    )


class _Loader:
    """verl's dataloader as the adapter sees it: chunks of ids, epochs in a fixed order."""

    def __init__(self, ids, chunk):
        self.ids, self.chunk, self.pos, self.calls = list(ids), chunk, 0, 0

    def __call__(self):
        self.calls += 1
        out = [self.ids[(self.pos + k) % len(self.ids)] for k in range(self.chunk)]
        self.pos += self.chunk
        return out


def _step(ctl, loader):
    ids = ctl.candidates(loader)
    a = ctl.select(ids)
    owners = [p for p, c in zip(a.prompt_ids, a.counts, strict=True) for _ in range(c)]
    ctl.observe(
        owners, [float(int(o[1:]) % 3 == 0) for o in owners], [1] * len(owners), [0.0] * len(owners)
    )
    ctl.end_step(1.0)
    return a


def test_candidates_put_the_deferred_first_and_keep_unoffered_fetches():
    ctl = _selecting(max_deferrals=1, recheck_prob=0.0, n_max=8)
    ids = [f"p{i}" for i in range(10)]
    ctl.register(ids)
    loader = _Loader(ids, chunk=4)  # gen_batch_size 4: 8 candidates take 2 fetches
    first = _step(ctl, loader)
    assert first.prompt_ids == ids[:8] and sum(first.counts) == 16
    deferred = [p for p, c in zip(first.prompt_ids, first.counts, strict=True) if c == 0]
    assert ctl.control.pending() == deferred
    offered = ctl.candidates(loader)
    # deferred first; then fresh ones in the loader's order, the over-fetched kept for later
    assert offered[: len(deferred)] == deferred
    fresh = offered[len(deferred) :]
    stream = [p for p in ids[8:] + ids if p not in deferred]  # the loader wraps to epoch 2
    assert fresh == stream[: len(fresh)]
    a = ctl.select(offered)
    # max_deferrals=1: every deferred prompt is rolled at its second offer
    assert all(c > 0 for p, c in zip(a.prompt_ids, a.counts, strict=True) if p in deferred)


def test_selection_state_holds_pending_and_fetched_ids():
    ctl = _selecting(n_max=8)
    ids = [f"p{i}" for i in range(12)]
    ctl.register(ids)
    loader = _Loader(ids, chunk=5)
    for _ in range(3):
        _step(ctl, loader)
    state = json.loads(json.dumps(ctl.state_dict()))
    assert state["pool"]["ids"] == ctl.control.pending()
    other = _selecting(n_max=8)
    other.load_state_dict(state)
    a, b = _Loader(ids, chunk=5), _Loader(ids, chunk=5)
    a.pos = b.pos = loader.pos  # verl's dataloader state is restored from its own data.pt
    assert other.candidates(b) == ctl.candidates(a)


def test_selection_settings_name_verl_keys():
    with pytest.raises(ConfigError, match="e3rl.candidates_per_step=40 .*data.train_batch_size"):
        _selecting(batch=4, candidates=40)
    with pytest.raises(ConfigError, match="batch_size"):
        settings = E3rlSettings.from_mapping({"candidates_per_step": 8})
        E3rlControl(settings, n=4, initial_temperature=1.0, vocab_size=384, total_steps=10)
