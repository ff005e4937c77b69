"""`e3rl eval` end to end, and `e3rl report` on real (short) runs."""

import json

from cli import run_cli

from conftest import TINY


def test_eval_end_to_end_matches_a_direct_recomputation(tmp_path):
    run = tmp_path / "run"
    assert (
        run_cli(
            "train", *TINY, "trainer.total_steps=1", f"trainer.output_dir={run}", "--quiet"
        ).returncode
        == 0
    )
    res = run_cli(
        "eval",
        str(run / "final"),
        "--data",
        "arith:val",
        "--n",
        "4",
        "--k",
        "1,2,4",
        "--max-new-tokens",
        "8",
        "--output-dir",
        str(tmp_path / "ev"),
        *TINY,
    )
    assert res.returncode == 0, res.stderr
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    for key in (
        "greedy_accuracy",
        "mean_at_n",
        "pass_at_k",
        "entropy",
        "distinct_answers",
        "num_prompts",
        "by_group",
        "items",
    ):
        assert key in ev, key
    assert ev["num_prompts"] == 40 and set(ev["pass_at_k"]) == {"1", "2", "4"}
    assert 0 <= ev["greedy_accuracy"] <= 1 and ev["entropy"] >= 0
    p = ev["pass_at_k"]
    assert 0 <= p["1"] <= p["2"] <= p["4"] <= 1  # pass@k never falls with k
    assert abs(p["1"] - ev["mean_at_n"]) < 1e-9  # pass@1 is the mean success rate (0/1 reward)
    assert 1 <= ev["distinct_answers"] <= 4 or ev["distinct_answers"] == 0

    # Greedy accuracy, recomputed here from the saved model without e3rl's engine.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from e3rl.config_io import load_config
    from e3rl.data import load_source
    from e3rl.tasks import arith

    model = AutoModelForCausalLM.from_pretrained(run / "final").eval()
    tok = AutoTokenizer.from_pretrained(run / "final")
    cfg = load_config(None, TINY)
    correct = 0
    for p in load_source("arith:val", cfg.task):
        ids = tok(p.text, return_tensors="pt", add_special_tokens=False).input_ids
        out = model.generate(
            ids,
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        correct += arith.score(text, p.answer)
    assert ev["greedy_accuracy"] == correct / 40


def test_report_on_two_real_runs(tmp_path):
    runs = []
    for name, extra in (("uniform", []), ("value", ["budget.allocator=value", "budget.n_min=2"])):
        run = tmp_path / name
        res = run_cli(
            "train",
            *TINY,
            *extra,
            "trainer.total_steps=4",
            "trainer.eval_every=2",
            "rollout.temperature_control=entropy",
            f"trainer.output_dir={run}",
            "--quiet",
        )
        assert res.returncode == 0, res.stderr
        runs.append(str(run))
    out = tmp_path / "report"
    res = run_cli("report", *runs, "--out", str(out))
    assert res.returncode == 0, res.stderr
    md = (out / "report.md").read_text()
    assert "uniform" in md and "value" in md
    pngs = list(out.glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 10_000 for p in pngs)
