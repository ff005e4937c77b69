"""Tests for e3rl.tensors: the entropy the temperature controller is fed, by hand and vs torch."""

from __future__ import annotations

import math

import pytest
import torch

from e3rl.control.temperature import EntropyTemperatureController
from e3rl.tensors import masked_mean, token_entropy

V = 384


def controller(**kwargs) -> EntropyTemperatureController:
    kwargs.setdefault("initial_temperature", 1.0)
    kwargs.setdefault("vocab_size", V)
    return EntropyTemperatureController(**kwargs)


# Entropy measurement.


def test_token_entropy_by_hand():
    # softmax([ln 1, ln 2, ln 3]) = [1/6, 2/6, 3/6]
    # H = 1/6 ln 6 + 1/3 ln 3 + 1/2 ln 2 = 0.298627 + 0.366204 + 0.346574 = 1.011404
    logits = torch.tensor([0.0, math.log(2.0), math.log(3.0)])
    assert token_entropy(logits, 1.0).item() == pytest.approx(1.011404, abs=1e-5)
    # At T = 2 the weights are [1, sqrt 2, sqrt 3], Z = 1 + 1.414214 + 1.732051 = 4.146264:
    # H = ln Z - (sqrt 2 * ln 2 / 2 + sqrt 3 * ln 3 / 2) / Z = 1.422208 - 0.347676 = 1.074532
    assert token_entropy(logits, 2.0).item() == pytest.approx(1.074532, abs=1e-5)
    # Uniform logits: ln V.
    assert token_entropy(torch.zeros(V), 0.7).item() == pytest.approx(math.log(V), abs=1e-5)


def test_token_entropy_keeps_leading_dims_and_matches_torch():
    logits = torch.randn(2, 3, 5, 17, dtype=torch.float64)
    got = token_entropy(logits, 0.8)
    assert got.shape == (2, 3, 5)
    expected = torch.distributions.Categorical(logits=logits / 0.8).entropy()
    torch.testing.assert_close(got, expected)


def test_token_entropy_is_stable_for_extreme_and_masked_logits():
    peaked = torch.tensor([1000.0, 0.0, 0.0])
    assert token_entropy(peaked, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    masked = torch.tensor([0.0, 0.0, float("-inf")], requires_grad=True)
    h = token_entropy(masked, 1.0)
    assert h.item() == pytest.approx(math.log(2.0), abs=1e-6)
    h.backward()
    assert torch.isfinite(masked.grad).all()
    half = token_entropy(torch.randn(4, 9).to(torch.bfloat16), 1.0)
    assert half.dtype == torch.float32


def test_token_entropy_rejects_a_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(torch.zeros(3), 0.0)


def test_masked_mean_weights_tokens_not_sequences():
    # Sequence 1: 4 tokens of entropy 1; sequence 2: 1 token of entropy 3 (padding is NaN).
    values = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, float("nan"), float("nan"), float("nan")]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]])
    # Token-weighted: (4 * 1 + 3) / 5 = 1.4. A mean of per-sequence means would give (1 + 3) / 2.
    assert masked_mean(values, mask) == pytest.approx(1.4)
    assert masked_mean(values, mask.bool()) == pytest.approx(1.4)


def test_masked_mean_of_nothing_is_nan_and_the_controller_skips_it():
    value = masked_mean(torch.ones(2, 3), torch.zeros(2, 3))
    assert math.isnan(value)
    c = controller(warmup_steps=0, target_entropy=1.0)
    assert c.update(value) == 1.0
    assert c.num_invalid == 1


def test_masked_mean_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mask"):
        masked_mean(torch.ones(2, 3), torch.ones(2, 4))
