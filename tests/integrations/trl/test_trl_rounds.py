"""The TRL adapter's framework-free round logic (no TRL needed: runs in the default suite)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e3rl.config import ConfigError
from e3rl.integrations.trl.rounds import (
    Round,
    advantage_mode,
    expand_rows,
    ragged_advantages,
    sampler_groups,
    zero_std_fraction,
)


def _key(row):
    return row["prompt"]


def test_sampler_groups_are_the_blocks_of_equal_prompts():
    rows = [{"prompt": p} for p in "aaabbbaaa"]  # a prompt may come back in a later block
    assert sampler_groups(rows, 3, _key) == [(0, "a"), (3, "b"), (6, "a")]


def test_sampler_groups_refuse_a_batch_that_is_not_repeat_sampled():
    with pytest.raises(RuntimeError, match="rows 0..2 of the generation batch hold 2"):
        sampler_groups([{"prompt": p} for p in "aabbbb"], 3, _key)
    with pytest.raises(RuntimeError, match="not a whole number of groups"):
        sampler_groups([{"prompt": "a"}] * 5, 2, _key)


def test_expand_rows_repeats_each_group_by_its_count_and_drops_zero():
    rows = [{"prompt": p, "answer": i} for i, p in enumerate("aabbcc")]
    out, group = expand_rows(rows, [0, 2, 4], [3, 0, 1])
    assert [r["prompt"] for r in out] == ["a", "a", "a", "c"]
    assert group == [0, 0, 0, 2]
    out[0]["extra"] = 1  # TRL writes per-row fields: the copies must not share a dict
    assert "extra" not in out[1] and "extra" not in rows[0]


@given(st.lists(st.integers(0, 6), min_size=1, max_size=8))
def test_expand_rows_invariants(counts):
    rows = [{"prompt": str(g)} for g in range(len(counts)) for _ in range(2)]
    out, group = expand_rows(rows, [2 * g for g in range(len(counts))], counts)
    assert len(out) == len(group) == sum(counts)
    assert group == sorted(group)
    assert all(r["prompt"] == str(g) for r, g in zip(out, group, strict=True))


def test_ragged_advantages_by_hand():
    # groups of 3, 1 and 2 rollouts
    adv = ragged_advantages(
        torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]), [0, 0, 0, 1, 2, 2], "grpo"
    )
    s = math.sqrt(1 / 3)  # unbiased std of (1, 0, 1)
    want = [(1 / 3) / s, (-2 / 3) / s, (1 / 3) / s, 0.0, 0.0, 0.0]  # one -> 0, flat -> 0
    assert adv.tolist() == pytest.approx(want, abs=1e-5)
    dr = ragged_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), [0, 0, 0, 1], "drgrpo")
    assert dr.tolist() == pytest.approx([1 / 3, -2 / 3, 1 / 3, 0.0], abs=1e-6)


def test_ragged_advantages_leave_unscorable_rows_out():
    adv = ragged_advantages(torch.tensor([1.0, math.nan, 0.0]), [0, 0, 0], "grpo")
    h = 0.5 / math.sqrt(0.5)  # (1, 0): mean 0.5, unbiased std sqrt(0.5)
    assert adv.tolist() == pytest.approx([h, 0.0, -h], abs=1e-5)
    assert ragged_advantages(torch.tensor([math.nan]), [0], "grpo").tolist() == [0.0]


def test_zero_std_fraction_counts_real_groups():
    assert zero_std_fraction([1, 1, 0, 1, 0, 0], [0, 0, 1, 1, 2, 3]) == pytest.approx(3 / 4)
    assert math.isnan(zero_std_fraction([math.nan], [0]))


def test_advantage_mode_of_scale_rewards():
    assert advantage_mode("group") == "grpo" and advantage_mode(True) == "grpo"
    assert advantage_mode("none") == "drgrpo" and advantage_mode(False) == "drgrpo"
    with pytest.raises(ConfigError, match="scale_rewards='batch' is invalid"):
        advantage_mode("batch")


def test_round_entropy_is_token_weighted():
    rnd = Round(["a"], [2], [0.0], [0, 0], 1.0)
    assert math.isnan(rnd.entropy())
    rnd.add_entropy(10.0, 4)  # mean 2.5 over 4 tokens
    rnd.add_entropy(2.0, 1)  # mean 2.0 over 1 token
    assert rnd.entropy() == pytest.approx(12 / 5)
