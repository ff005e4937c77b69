"""Tests for the entropy-targeting temperature controller (e3rl.control.temperature).

Hand computations use V = 384, for which the step scale is
    D = ln V + ln ln V = ln 384 + ln(5.950643) = 5.950643 + 1.783499 = 7.734142.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e3rl.control.temperature import EntropyTemperatureController
from e3rl.tensors import token_entropy

V = 384
D = 7.734142  # ln 384 + ln ln 384, to 6 decimals
LN2 = 0.693147


def controller(**kwargs) -> EntropyTemperatureController:
    kwargs.setdefault("initial_temperature", 1.0)
    kwargs.setdefault("vocab_size", V)
    return EntropyTemperatureController(**kwargs)


def test_scale_constant_matches_the_hand_value():
    assert math.log(V) + math.log(math.log(V)) == pytest.approx(D, abs=1e-6)


# Warm-up and the update rule.


def test_warmup_of_one_step_then_updates():
    c = controller(warmup_steps=1)
    assert c.target_entropy is None

    # Step 1 is warm-up: recorded, temperature kept.
    assert c.update(1.5) == 1.0
    assert c.target_entropy is None and c.last_target is None
    assert c.step == 1

    # Step 2: target = mean(1.5) = 1.5; H = 0.75 is below it, so T rises:
    # T = 1.0 * (1 + 1.0 * ln(1.5 / 0.75) / D) = 1 + 0.693147 / 7.734142 = 1.089622
    assert c.update(0.75) == pytest.approx(1.089622, abs=1e-6)
    assert c.target_entropy == c.last_target == 1.5  # the target step 2 set and used

    # Step 3: H = 3.0 is above the target, so T falls:
    # T = 1.089622 * (1 + 1.089622 * ln(1.5 / 3.0) / D)
    #   = 1.089622 * (1 - 1.089622 * 0.693147 / 7.734142) = 1.089622 * 0.902346 = 0.983216
    assert c.update(3.0) == pytest.approx(0.983216, abs=1e-6)

    # Step 4: H equal to the target leaves T where it is (ln 1 = 0).
    before = c.temperature
    assert c.update(1.5) == before


def test_warmup_of_three_steps_uses_the_mean():
    c = controller(initial_temperature=0.5, warmup_steps=3)
    for h in (1.0, 2.0, 3.0):
        assert c.update(h) == 0.5
    assert c.target_entropy is None

    # Step 4: target = (1 + 2 + 3) / 3 = 2.0; H = 1.0:
    # T = 0.5 * (1 + 0.5 * ln 2 / D) = 0.5 * (1 + 0.5 * 0.693147 / 7.734142)
    #   = 0.5 * (1 + 0.044811) = 0.522405
    assert c.update(1.0) == pytest.approx(0.522405, abs=1e-6)
    assert c.target_entropy == 2.0


def test_given_target_is_the_target_from_the_start():
    c = controller(warmup_steps=1, target_entropy=2.0)
    assert c.target_entropy == 2.0
    assert c.update(1.0) == 1.0  # still a warm-up step: T kept, target kept
    assert c.target_entropy == 2.0
    # T = 1.0 * (1 + ln(2.0 / 1.0) / D) = 1.089622
    assert c.update(1.0) == pytest.approx(1.089622, abs=1e-6)
    assert c.target_entropy == 2.0


def test_no_warmup_with_given_target_updates_at_step_one():
    c = controller(warmup_steps=0, target_entropy=2.0)
    assert c.update(1.0) == pytest.approx(1.089622, abs=1e-6)


def test_clamp_at_max_temperature():
    c = controller(initial_temperature=2.9, target_entropy=2.0, warmup_steps=0)
    # T = 2.9 * (1 + 2.9 * ln(2.0 / 0.5) / D) = 2.9 * (1 + 2.9 * 1.386294 / 7.734142)
    #   = 2.9 * (1 + 0.519806) = 4.407438  -> clamped to max_temperature = 3.0
    assert c.update(0.5) == 3.0
    assert c.update(0.5) == 3.0


def test_clamp_at_min_temperature():
    c = controller(initial_temperature=0.5, min_temperature=0.4, target_entropy=1.0, warmup_steps=0)
    # H = e^4: T = 0.5 * (1 + 0.5 * ln(1 / e^4) / D) = 0.5 * (1 - 2 / 7.734142)
    #   = 0.5 * (1 - 0.258594) = 0.370703  -> clamped to min_temperature = 0.4
    assert c.update(math.exp(4.0)) == 0.4


def test_a_proposal_below_zero_is_clamped_not_negative():
    c = controller(initial_temperature=3.0, target_entropy=0.01, warmup_steps=0)
    # T = 3 * (1 + 3 * ln(0.01 / 5) / D) = 3 * (1 + 3 * (-6.214608) / 7.734142)
    #   = 3 * (1 - 2.410587) = -4.231762  -> clamped to min_temperature = 0.1
    assert c.update(5.0) == 0.1


# Invalid entropies.


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), float("-inf")])
def test_invalid_entropy_after_warmup_is_skipped_and_counted(bad):
    c = controller(warmup_steps=0, target_entropy=2.0)
    assert c.update(bad) == 1.0
    assert c.num_invalid == 1
    assert c.step == 1
    assert c.target_entropy == 2.0
    # The next valid entropy updates as usual: ln(2.0 / 1.0) / D -> 1.089622.
    assert c.update(1.0) == pytest.approx(1.089622, abs=1e-6)
    assert c.num_invalid == 1


def test_invalid_entropies_of_every_kind_accumulate():
    c = controller(warmup_steps=0, target_entropy=2.0)
    for bad in (0.0, float("nan"), float("inf"), -1.0, float("-inf"), torch.tensor(float("nan"))):
        assert c.update(bad) == 1.0
    assert (c.num_invalid, c.step) == (6, 6)


def test_invalid_entropy_during_warmup_is_not_recorded():
    c = controller(warmup_steps=3)
    for h in (1.0, float("nan"), 3.0):
        c.update(h)
    assert c.num_invalid == 1
    # Target = mean of the valid ones = (1 + 3) / 2 = 2.0; H = 1.0 -> T = 1.089622.
    assert c.update(1.0) == pytest.approx(1.089622, abs=1e-6)
    assert c.target_entropy == 2.0


def test_warmup_without_a_valid_entropy_waits_for_the_first_valid_one():
    c = controller(warmup_steps=2)
    c.update(float("nan"))
    c.update(0.0)
    assert c.update(float("inf")) == 1.0  # step 3: no target yet, T kept
    assert c.target_entropy is None
    assert c.update(1.25) == 1.0  # step 4: 1.25 becomes the target; ln(1.25 / 1.25) = 0
    assert c.target_entropy == 1.25
    # Step 5: ln(1.25 / 0.625) = ln 2 -> T = 1.089622.
    assert c.update(0.625) == pytest.approx(1.089622, abs=1e-6)
    assert c.num_invalid == 3


# Annealing.


def test_annealing_targets_across_the_window_and_past_the_end():
    # S = 10, ratio 0.4: s_a = 10 - floor(4.0) = 6, window S - s_a = 4 steps, progress (s - 6) / 4.
    # H*_0 = 2.0, f = 0.9: H* = 2.0 * (0.9 + 0.1 * (1 + cos(pi * progress)) / 2).
    expected = {
        1: 2.0,
        5: 2.0,
        6: 2.0,  # progress 0: cos 0 = 1 -> 2.0 * (0.9 + 0.1) = 2.0
        7: 1.970711,  # progress 1/4: (1 + 0.707107) / 2 = 0.853553 -> 2.0 * 0.985355
        8: 1.9,  # progress 1/2 (middle): cos(pi/2) = 0 -> 2.0 * (0.9 + 0.05) = 1.9
        9: 1.829289,  # progress 3/4: (1 - 0.707107) / 2 = 0.146447 -> 2.0 * 0.914645
        10: 1.8,  # progress 1 (end): cos(pi) = -1 -> 2.0 * 0.9 = 1.8
        11: 1.8,  # past S: progress capped at 1, the target does not rise again
        15: 1.8,
        20: 1.8,
    }
    c = controller(warmup_steps=0, target_entropy=2.0, anneal=True, total_steps=10)
    for s in range(1, 21):
        # Feeding the target as it stood before step s keeps T at exactly 1.0: this checks that
        # step s's temperature update uses the target from before step s's annealing.
        assert c.update(c.target_entropy) == 1.0
        if s in expected:
            assert c.target_entropy == pytest.approx(expected[s], abs=1e-6), s


def test_temperature_update_uses_the_target_before_this_steps_annealing():
    c = controller(warmup_steps=0, target_entropy=2.0, anneal=True, total_steps=10)
    for _ in range(7):
        c.update(c.target_entropy)
    assert c.target_entropy == pytest.approx(1.970711, abs=1e-6)  # after step 7
    # Step 8 feeds H = 1.9, which is step 8's annealed target; the update uses step 7's:
    # T = 1 * (1 + ln(1.970711 / 1.9) / D) = 1 + 0.036540 / 7.734142 = 1.004725
    assert c.update(1.9) == pytest.approx(1.004725, abs=1e-6)
    assert c.target_entropy == pytest.approx(1.9, abs=1e-12)
    assert c.last_target == pytest.approx(1.970711, abs=1e-6)  # what a metrics row shows


def test_annealing_scales_the_warmup_target():
    c = controller(warmup_steps=2, anneal=True, total_steps=10)
    c.update(1.0)
    c.update(3.0)  # H*_0 = 2.0
    for _ in range(8):
        c.update(c.target_entropy if c.target_entropy is not None else 2.0)
    assert c.step == 10
    assert c.target_entropy == pytest.approx(1.8, abs=1e-12)
    assert c.temperature == 1.0


def test_empty_annealing_window_drops_to_the_final_target_at_the_last_step():
    # ratio 0: s_a = S = 5, no window; the progress counts as 1 from s_a on (no 0 / 0).
    c = controller(warmup_steps=0, target_entropy=2.0, anneal=True, total_steps=5, anneal_ratio=0.0)
    for _ in range(4):
        c.update(2.0)
    assert c.target_entropy == 2.0
    c.update(2.0)
    assert c.target_entropy == pytest.approx(1.8, abs=1e-12)


def test_annealing_start_is_not_lost_to_float_rounding():
    # 0.29 * 100 == 28.999999999999996 in floating point; floor must still give 29, so
    # s_a = 71 and step 72 is at progress 1/29:
    # H* = 2.0 * (0.9 + 0.1 * (1 + cos(pi / 29)) / 2) = 1.999414
    c = controller(
        warmup_steps=0, target_entropy=2.0, anneal=True, total_steps=100, anneal_ratio=0.29
    )
    for _ in range(71):
        c.update(2.0)
    assert c.target_entropy == 2.0
    c.update(2.0)
    assert c.target_entropy == pytest.approx(1.999414, abs=1e-6)


def test_anneal_factor_one_keeps_the_target():
    c = controller(warmup_steps=0, target_entropy=2.0, anneal=True, total_steps=4, anneal_factor=1)
    for _ in range(6):
        c.update(2.0)
    assert c.target_entropy == 2.0


# Constructor validation.


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"vocab_size": 2}, "vocab_size"),
        ({"min_temperature": 0.0}, "min_temperature"),
        ({"min_temperature": -1.0}, "min_temperature"),
        ({"max_temperature": 0.05}, "max_temperature"),
        ({"max_temperature": float("inf")}, "max_temperature"),
        ({"initial_temperature": 0.05}, "initial_temperature"),
        ({"initial_temperature": 3.5}, "initial_temperature"),
        ({"initial_temperature": float("nan")}, "initial_temperature"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"target_entropy": 0.0}, "target_entropy"),
        ({"target_entropy": float("nan")}, "target_entropy"),
        ({"anneal": True}, "total_steps"),
        ({"anneal": True, "total_steps": 0}, "total_steps"),
        ({"anneal_ratio": -0.1}, "anneal_ratio"),
        ({"anneal_ratio": 1.5}, "anneal_ratio"),
        ({"anneal_factor": 0.0}, "anneal_factor"),
        ({"anneal_factor": 1.1}, "anneal_factor"),
    ],
)
def test_invalid_arguments_are_rejected_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        controller(**kwargs)


def test_boundary_arguments_are_accepted():
    controller(vocab_size=3, min_temperature=1.0, max_temperature=1.0, warmup_steps=0)
    controller(anneal=True, total_steps=1, anneal_ratio=1.0, anneal_factor=1.0)


# Closed loop against a synthetic policy.


def synthetic_logits(seed: int = 0, positions: int = 32, scale: float = 8.0) -> torch.Tensor:
    """Fixed random logits; scale 8 gives a token entropy of about 0.7 nats at T = 1,
    close to the 0.76 the authors measured on their 1.5B model."""
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(positions, V, dtype=torch.float64, generator=generator)


def policy_entropy(logits: torch.Tensor, temperature: float) -> float:
    return token_entropy(logits, temperature).mean().item()


def test_closed_loop_settles_on_the_target():
    z = synthetic_logits()
    target = policy_entropy(z, 1.3)
    c = controller(initial_temperature=0.7, warmup_steps=0, target_entropy=target)
    entropies = []
    for _ in range(100):
        h = policy_entropy(z, c.temperature)
        entropies.append(h)
        c.update(h)

    assert entropies[0] < 0.5 * target  # it starts far off
    errors = [abs(h - target) / target for h in entropies]
    # Measured: every step from the 21st on is within 2%; assert from the 30th on.
    assert max(errors[29:]) < 0.02
    # It approaches from below without overshooting, and ends at the temperature that made it.
    assert max(entropies) < target * 1.02
    assert c.temperature == pytest.approx(1.3, abs=1e-3)


def test_drifting_policy_entropy_tracks_the_target_while_temperature_rises():
    # RL sharpens the policy: logits grow by 0.5% a step, so holding the entropy needs T to grow
    # with them (H of z * k at T equals H of z at T / k).
    z = synthetic_logits()
    c = controller(initial_temperature=1.0, warmup_steps=1)
    entropies, temperatures = [], []
    steps, growth = 150, 0.005
    for s in range(steps):
        temperatures.append(c.temperature)
        h = policy_entropy(z * (1 + growth * s), c.temperature)
        entropies.append(h)
        c.update(h)

    target = c.target_entropy
    assert target == entropies[0]
    # Measured: a lag of at most 3.3% below the target (an integrator following a ramp).
    assert max(abs(h - target) / target for h in entropies) < 0.05
    assert all(b >= a for a, b in zip(temperatures[:-1], temperatures[1:], strict=True))
    final_sharpening = 1 + growth * (steps - 1)  # 1.745
    assert c.temperature > 0.95 * final_sharpening
    # Without the controller the entropy would have fallen to about half the target.
    assert policy_entropy(z * final_sharpening, 1.0) < 0.6 * target


# Checkpointing.


def json_round_trip(c: EntropyTemperatureController, **kwargs) -> EntropyTemperatureController:
    restored = controller(**kwargs)
    restored.load_state_dict(json.loads(json.dumps(c.state_dict(), allow_nan=False)))
    assert restored.state_dict() == c.state_dict()
    return restored


@pytest.mark.parametrize("split", [1, 2, 5, 12, 25])
def test_state_round_trip_through_json_mid_run(split):
    settings_ = {"warmup_steps": 3, "anneal": True, "total_steps": 20, "initial_temperature": 0.7}
    z = synthetic_logits()
    c = controller(**settings_)
    feed = [policy_entropy(z, 0.7 + 0.05 * i) for i in range(30)]
    feed[4] = float("nan")
    for h in feed[:split]:
        c.update(h)
    restored = json_round_trip(c, **settings_)
    assert (restored.step, restored.num_invalid) == (c.step, c.num_invalid)
    for h in feed[split:]:
        assert restored.update(h) == c.update(h)
        assert restored.target_entropy == c.target_entropy


def test_state_holds_the_warmup_entropies_and_initial_target():
    c = controller(warmup_steps=3, anneal=True, total_steps=6)
    c.update(1.0)
    c.update(2.0)
    state = c.state_dict()
    assert state["warmup_entropies"] == [1.0, 2.0]
    assert state["initial_target_entropy"] is None
    for h in (3.0, 2.0, 2.0, 2.0):
        c.update(h)
    state = c.state_dict()
    assert state["initial_target_entropy"] == 2.0
    assert state["target_entropy"] < 2.0  # annealing has begun


def test_load_state_dict_rejects_an_incomplete_state():
    with pytest.raises(ValueError, match="missing"):
        controller().load_state_dict({"temperature": 1.0})


@settings(max_examples=60, deadline=None)
@given(
    entropies=st.lists(
        st.one_of(
            st.floats(min_value=1e-6, max_value=10.0),
            st.sampled_from([0.0, -1.0, float("nan"), float("inf"), float("-inf")]),
        ),
        max_size=30,
    ),
    split=st.integers(min_value=0, max_value=30),
    warmup=st.integers(min_value=0, max_value=4),
)
def test_any_entropy_sequence_keeps_the_temperature_in_range(entropies, split, warmup):
    settings_ = {"warmup_steps": warmup, "anneal": True, "total_steps": 20}
    c = controller(**settings_)
    split = min(split, len(entropies))
    for h in entropies[:split]:
        assert 0.1 <= c.update(h) <= 3.0
    restored = json_round_trip(c, **settings_)
    for h in entropies[split:]:
        assert 0.1 <= c.update(h) <= 3.0
        assert restored.update(h) == c.temperature
    invalid = sum(1 for h in entropies if not (math.isfinite(h) and h > 0))
    assert (c.num_invalid, c.step) == (invalid, len(entropies))
