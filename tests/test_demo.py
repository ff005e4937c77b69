"""`e3rl demo`: the shipped base is the demo's and inside its band; the entry point runs both
arms and its summary names what ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e3rl.demo import BAND, demo_config
from e3rl.warmstart import band_measures, check_base, find_base

# A few steps on a few validation prompts: the real entry point, in seconds. None of these keys
# shapes the base, so the shipped one is used.
QUICK = [
    "trainer.total_steps=2",
    "trainer.eval_every=2",
    "trainer.save_every=0",
    "trainer.threads=1",
    "data.val_limit=12",
    "data.batch_size=4",
    "rollout.max_new_tokens=24",
]


def _shipped():
    cfg = demo_config(Path("unused"))
    found = find_base(cfg.model, cfg.task, cfg.model.warm_start.seed)
    assert found is not None and found[1] == "shipped", (
        "the demo config has no shipped base (src/e3rl/bases/): run scripts/build_demo_base.py"
    )
    return cfg, found[0]


def test_the_demo_config_finds_its_shipped_base_for_every_trainer_seed():
    cfg, path = _shipped()
    for seed in (0, 1, 7):
        other = demo_config(Path("unused"), [f"trainer.seed={seed}"], arm="e3rl")
        assert find_base(other.model, other.task, other.model.warm_start.seed) == (path, "shipped")


def test_the_shipped_base_is_inside_the_demos_band():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from e3rl.warmstart import probe_base

    cfg, path = _shipped()
    model = AutoModelForCausalLM.from_pretrained(path)
    report = probe_base(model, AutoTokenizer.from_pretrained(path), cfg.task)
    assert check_base(report, BAND) == []
    # and it measures here what the build recorded (greedy decoding: the same up to float ties)
    recorded = json.loads((path / "base_check.json").read_text())["measures"]
    for key, value in band_measures(report, BAND).items():
        assert value == pytest.approx(recorded[key], abs=0.03), key


def test_demo_runs_the_method_and_the_baseline_and_names_them(tmp_path, capsys):
    from e3rl.demo import run_demo

    summary = run_demo(tmp_path / "demo", QUICK, quiet=True)
    on_disk = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert on_disk["allocator"] == "value" and on_disk["temperature_control"] == "entropy"
    assert on_disk["base_model"]["source"] == "shipped"
    assert set(on_disk["arms"]) == {"e3rl", "uniform"}
    assert on_disk["arms"]["uniform"]["allocator"] == "uniform"
    assert on_disk["arms"]["uniform"]["temperature_control"] == "none"
    assert on_disk["baseline"] == on_disk["arms"]["uniform"]
    for arm in on_disk["arms"].values():
        assert arm["steps"] == 2 and arm["val_prompts"] == 12
        assert [len(point) for point in arm["val_curve"]] == [2]
        assert 0 <= arm["frac_rollouts_mixed"] <= 1
    # same base, same validation prompts: both arms start from the same accuracy
    assert on_disk["arms"]["e3rl"]["base_val_accuracy"] == on_disk["baseline"]["base_val_accuracy"]
    assert summary["final_val_accuracy"] == on_disk["arms"]["e3rl"]["final_val_accuracy"]
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
    out = capsys.readouterr().out
    assert "with e3rl's method" in out and "with uniform GRPO" in out


def test_demo_without_baseline_runs_the_method_alone(tmp_path):
    from e3rl.demo import run_demo

    run_demo(tmp_path / "demo", QUICK, quiet=True, baseline=False)
    on_disk = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(on_disk["arms"]) == {"e3rl"} and on_disk["baseline"] is None
    assert not (tmp_path / "demo" / "uniform").exists()


def test_an_unknown_demo_arm_is_a_clear_error():
    with pytest.raises(ValueError, match="valid arms"):
        demo_config(Path("unused"), arm="ppo")
