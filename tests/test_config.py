import pytest

from e3rl.config import Config, ConfigError
from e3rl.config_io import describe, load_config


def test_defaults_validate_and_overrides_apply():
    cfg = load_config(
        None,
        [
            "rollout.n=8",
            "trainer.total_steps=50",
            "optim.lr=1e-3",
            "task.levels=[1,2]",
            "algo.dual_clip=null",
        ],
    )
    assert cfg.rollout.n == 8 and cfg.trainer.total_steps == 50
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.task.levels == [1, 2]
    assert cfg.algo.dual_clip is None


def test_yaml_file_and_nested_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rollout:\n  n: 6\nreward:\n  length_bias:\n    mu: 0.001\n")
    cfg = load_config(path, ["data.batch_size=3"])
    assert (cfg.rollout.n, cfg.reward.length_bias.mu, cfg.data.batch_size) == (6, 0.001, 3)


@pytest.mark.parametrize(
    "override, suggestion",
    [
        ("rollout.nn=3", "rollout.n"),
        ("trainer.total_step=3", "trainer.total_steps"),
        ("rolout.n=3", "rollout.n"),
        ("budget.alocator=rank", "budget.allocator"),
    ],
)
def test_unknown_keys_suggest_the_nearest(override, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
        load_config(None, [override])


@pytest.mark.parametrize(
    "override, words",
    [
        ("rollout.n=0", ["rollout.n=0", ">= 1"]),
        ("rollout.temperature=-1", ["rollout.temperature", "> 0"]),
        ("algo.clip_low=1.5", ["algo.clip_low", "[0, 1)"]),
        ("budget.allocator=greedy", ["budget.allocator", "'uniform', 'rank', 'value'"]),
        ("budget.allocator=rnak", ["did you mean 'rank'"]),
        ("rollout.n=abc", ["rollout.n", "integer"]),
        ("data.shuffle=3", ["data.shuffle", "true or false"]),
        ("budget.prior=[1]", ["budget.prior", "two floats"]),
        ("trainer.device=tpu", ["trainer.device", "'cpu'"]),
        ("budget.skip_below=1", ["budget.skip_below=1", "[0, 1)"]),
    ],
)
def test_invalid_values_name_field_and_range(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for w in words:
        assert w in str(e.value)


def test_cross_section_checks():
    with pytest.raises(ConfigError, match="rollout.n"):
        load_config(None, ["budget.allocator=rank", "rollout.n=20"])
    with pytest.raises(ConfigError, match="temperature_control=entropy"):
        load_config(None, ["temperature.anneal=true"])
    with pytest.raises(ConfigError, match="skip_below=0.2 is invalid with data.candidates_per"):
        load_config(None, ["budget.skip_below=0.2", "data.candidates_per_step=20"])


def test_bad_override_syntax_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["rollout.n"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_every_field_is_documented():
    rows = describe(Config)
    assert len(rows) > 60
    missing = [key for key, _, _, doc in rows if not doc]
    assert missing == []


def test_shipped_configs_load():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        load_config(path)


def test_demo_yaml_matches_the_embedded_demo(tmp_path):
    from pathlib import Path

    from e3rl.demo import demo_config

    yaml_cfg = load_config(
        Path(__file__).parents[1] / "configs" / "demo.yaml", [f"trainer.output_dir={tmp_path}"]
    )
    assert yaml_cfg == demo_config(tmp_path)


def test_e3rl_yaml_matches_the_demos_method_arm(tmp_path):
    from pathlib import Path

    from e3rl.demo import demo_config

    yaml_cfg = load_config(
        Path(__file__).parents[1] / "configs" / "e3rl.yaml", [f"trainer.output_dir={tmp_path}"]
    )
    assert yaml_cfg == demo_config(tmp_path, arm="e3rl")
    assert yaml_cfg.budget.allocator == "value"
    assert yaml_cfg.rollout.temperature_control == "entropy"


def test_readme_documents_every_key():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    missing = [key for key, *_ in describe(Config) if f"`{key}`" not in readme]
    assert missing == [], "run scripts/config_reference.py and paste its table into the README"
