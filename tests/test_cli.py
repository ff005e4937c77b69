"""The real entry point, end to end, in a subprocess (as a user runs it)."""

import json

from cli import run_cli

from conftest import TINY


def test_train_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = run_cli(
        "train",
        *TINY,
        "trainer.total_steps=3",
        f"trainer.output_dir={out}",
        "trainer.save_every=2",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in (
        "rollouts",
        "tokens",
        "cum_rollouts",
        "reward_mean",
        "frac_all_correct",
        "frac_all_wrong",
        "frac_mixed",
        "alloc_min",
        "alloc_mean",
        "alloc_max",
        "entropy",
        "temperature",
        "kl",
        "clip_frac",
        "grad_norm",
        "time_generate",
        "time_reward",
        "time_update",
    ):
        assert key in rows[0], key
    assert rows[0]["rollouts"] == 16 and rows[-1]["cum_rollouts"] == 48
    assert "val_accuracy" in rows[-1]
    assert (out / "config.yaml").is_file() and (out / "summary.json").is_file()
    assert (out / "checkpoints" / "step-000002" / "model.safetensors").is_file()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")


def test_resume_continues_and_finished_run_trains_nothing(tmp_path):
    out = tmp_path / "run"
    common = [*TINY, f"trainer.output_dir={out}", "trainer.save_every=2", "--quiet"]
    assert run_cli("train", *common, "trainer.total_steps=2").returncode == 0
    # A longer run resumes from the step-2 checkpoint... (final exists, but a checkpoint too)
    res = run_cli("train", *common, "trainer.total_steps=4", "--resume")
    assert res.returncode == 0, res.stderr
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    res = run_cli("train", *common, "trainer.total_steps=4", "rollout.n=2", "--resume")
    assert res.returncode == 2 and "rollout.n" in res.stderr and "--resume-force" in res.stderr


def test_cli_errors_are_one_line(tmp_path):
    res = run_cli("train", "trainer.total_stepz=3")
    assert res.returncode == 2
    assert "did you mean 'trainer.total_steps'" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("train", *TINY, f"data.train={tmp_path / 'none.jsonl'}")
    assert res.returncode == 2 and "does not exist" in res.stderr
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_text("")
    res = run_cli("train", *TINY, f"model.path={tmp_path / 'm'}")
    assert res.returncode == 2 and "no tokenizer" in res.stderr
    res = run_cli(
        "train", *TINY, "reward.fn=no_such_module:f", f"trainer.output_dir={tmp_path / 'r'}"
    )
    assert res.returncode == 2 and "cannot import module 'no_such_module'" in res.stderr
