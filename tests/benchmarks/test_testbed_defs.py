"""The suite's declared testbeds and arms (benchmarks/testbed_defs.py) against the shipped configs."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import testbed_defs as D  # noqa: E402

# ---------------------------------------------------------------------------- arms and configs


def _config(path: str, overrides=()):
    from e3rl.config_io import load_config

    return dataclasses.asdict(load_config(str(REPO / path), list(overrides)))


def test_e3rl_arm_is_configs_e3rl_yaml():
    e3rl, arm = _config("configs/e3rl.yaml"), _config("configs/demo.yaml", D.E3RL)
    e3rl["trainer"].pop("output_dir"), arm["trainer"].pop("output_dir")
    assert arm == e3rl


@pytest.mark.parametrize("arm", list(D.ARMS))
def test_every_arm_is_a_valid_config_with_the_same_budget(arm):
    tb = D.TESTBEDS["arith"]
    base = _config(tb["config"], tb["overrides"])
    cfg = _config(tb["config"], [*tb["overrides"], *D.arm_overrides(arm, 16)])
    for key in ("model", "task"):  # the same base model
        assert cfg[key] == base[key]
    assert cfg["data"]["batch_size"] * cfg["rollout"]["n"] == 128
    if arm == "selection":
        assert cfg["data"]["candidates_per_step"] == 32


def test_unknown_arm_is_a_clear_error():
    with pytest.raises(SystemExit, match="'nope' is unknown; valid: uniform"):
        D.arm_overrides("nope", 16)


@pytest.mark.parametrize("name", list(D.TESTBEDS))
def test_every_declared_testbed_resolves_to_one_budget_and_a_validation_split(name):
    tb = D.testbed_config(name)
    assert tb["name"] == name and tb["budget"] == tb["batch_size"] * 8
    assert tb["val_source"].endswith(":val")
    assert tb["spread_limit"] > 0 and tb["steps"] > tb["quick"]["steps"]


def test_an_unknown_testbed_is_a_clear_error():
    with pytest.raises(SystemExit, match="'nope' is unknown; valid: countdown-greedy"):
        D.testbed_config("nope")
