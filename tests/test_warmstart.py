"""The warm start's base check (band), its first-token classes and its progress output."""

from __future__ import annotations

import pytest

from e3rl.warmstart import BaseBand, band_measures, check_base

BAND = BaseBand(
    levels=(2, 3),
    worked_share=(0.0, 0.35),
    p_worked=(0.1, 0.45),
    min_worked_advantage=0.3,
    greedy_accuracy=(0.2, 0.6),
)


def _report(worked: tuple[float, float], p: tuple[float, float], fw, fd, acc=0.4) -> dict:
    """A probe report for levels 2 (100 prompts) and 3 (300 prompts), level 1 as noise."""
    levels = {
        1: {
            "n": 50,
            "greedy": 1.0,
            "worked": 1.0,
            "p_worked": 0.9,
            "forced_worked": 0.0,
            "forced_direct": 1.0,
        },
    }
    for lv, n, i in ((2, 100, 0), (3, 300, 1)):
        levels[lv] = {
            "n": n,
            "greedy": 0.3,
            "worked": worked[i],
            "p_worked": p[i],
            "forced_worked": fw[i],
            "forced_direct": fd[i],
        }
    return {"greedy_accuracy": acc, "levels": levels}


def test_band_measures_pool_the_bands_levels_weighted_by_prompts():
    m = band_measures(_report((0.2, 0.4), (0.1, 0.3), (0.9, 0.5), (0.1, 0.3)), BAND)
    # (100 * 0.2 + 300 * 0.4) / 400 = 0.35; level 1 is not in the band and does not count
    assert m["worked_share"] == pytest.approx(0.35)
    assert m["p_worked"] == pytest.approx((10 + 90) / 400)
    assert m["worked_advantage"] == pytest.approx((90 + 150) / 400 - (10 + 90) / 400)


def test_a_base_inside_the_band_passes():
    assert check_base(_report((0.1, 0.2), (0.2, 0.3), (0.9, 0.8), (0.2, 0.1)), BAND) == []


def test_each_way_out_of_the_band_is_named():
    greedy_works = check_base(_report((0.6, 0.7), (0.2, 0.3), (0.9, 0.8), (0.2, 0.1)), BAND)
    assert len(greedy_works) == 1 and greedy_works[0].startswith("worked_share")
    no_advantage = check_base(_report((0.1, 0.2), (0.2, 0.3), (0.5, 0.4), (0.4, 0.3)), BAND)
    assert len(no_advantage) == 1 and "beat direct ones by 0.100" in no_advantage[0]
    coin_flip = check_base(_report((0.1, 0.2), (0.5, 0.5), (0.9, 0.8), (0.2, 0.1)), BAND)
    assert len(coin_flip) == 1 and coin_flip[0].startswith("p_worked 0.500")
    too_good = check_base(_report((0.1, 0.2), (0.2, 0.3), (0.9, 0.8), (0.2, 0.1), 0.9), BAND)
    assert len(too_good) == 1 and too_good[0].startswith("greedy_accuracy")


def test_a_probe_without_the_bands_levels_is_an_error():
    report = _report((0.1, 0.2), (0.2, 0.3), (0.9, 0.8), (0.2, 0.1))
    with pytest.raises(ValueError, match="none of"):
        band_measures(report, BaseBand((7,), (0, 1), (0, 1), 0.0, (0, 1)))


def test_first_token_classes_split_direct_from_worked_openings():
    from e3rl.models import train_tokenizer
    from e3rl.warmstart import _first_token_classes

    tok = train_tokenizer(["7+8=15,15-5=10#10", "12+30=42#42", "#5"] * 20 + ["0123456789"])
    direct, worked = _first_token_classes(tok)
    for i in range(len(tok)):
        text = tok.decode([i])
        assert bool(direct[i]) == text.startswith("#")
        assert bool(worked[i]) == (text[:1].isdigit())
    assert direct.any() and worked.any() and not (direct & worked).any()


def test_warm_start_prints_progress_lines_when_stderr_is_not_a_terminal(capsys):
    import itertools

    from e3rl.config import TinyModelConfig
    from e3rl.models import build_tiny_model, train_tokenizer
    from e3rl.warmstart import supervised_warm_start

    tok = train_tokenizer(["1+2=#3", "4+5=#9"] * 10 + ["0123456789"])
    model = build_tiny_model(
        TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), tok
    )
    examples = itertools.cycle([("1+2=", "#3"), ("4+5=", "#9")])
    losses = supervised_warm_start(model, tok, examples, steps=20, lr=1e-3, batch_size=2)
    assert len(losses) == 20
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warm start:")]
    # one line every tenth of the way: steps 2, 4, ..., 20
    assert [x.split(",")[0] for x in lines] == [f"warm start: step {s}/20" for s in range(2, 21, 2)]


def _examples(wf: float, prior: float | None, n: int = 20_000, seed: int = 0) -> list[tuple]:
    import itertools
    import random

    from e3rl.config import TaskConfig
    from e3rl.tasks import arith
    from e3rl.warmstart import warm_start_examples

    task = TaskConfig(levels=[1, 2, 3], worked_fraction=wf, worked_prior=prior)
    return list(
        itertools.islice(
            warm_start_examples(arith.stream([1, 2, 3], seed), task, random.Random(seed)), n
        )
    )


def test_worked_prior_sets_the_share_of_worked_openings_trained_on():
    examples = _examples(0.75, 0.3)
    multi = [e for e in examples if e[0].count("+") + e[0].count("-") > 1]
    worked = [e for e in multi if not e[1].startswith("#")]
    # 3 in 4 multi-step examples are worked (binomial sd ~0.004 at ~13k examples)
    assert len(worked) / len(multi) == pytest.approx(0.75, abs=0.015)
    first_trained = [e for e in multi if e[2]]
    share = sum(not e[1].startswith("#") for e in first_trained) / len(first_trained)
    assert share == pytest.approx(0.3, abs=0.02)
    # direct answers (and single operations) always train their first token
    assert all(e[2] for e in examples if e[1].startswith("#"))


def test_without_worked_prior_the_stream_is_the_earlier_one():
    """Same draws as before worked_prior existed: one random() per problem, worked if below
    worked_fraction, every first token trained (cache keys of old configs keep their bases)."""
    import itertools
    import random

    from e3rl.tasks import arith

    pick, got = random.Random(0), _examples(0.5, None, n=500)
    want = [
        (p.question, p.solution if pick.random() < 0.5 else p.direct)
        for p in itertools.islice(arith.stream([1, 2, 3], 0), 500)
    ]
    assert [(q, r) for q, r, _ in got] == want
    assert all(first for *_, first in got)


def test_worked_prior_above_worked_fraction_is_rejected():
    from e3rl.config import TaskConfig

    with pytest.raises(ValueError, match="worked_prior"):
        TaskConfig(worked_fraction=0.25, worked_prior=0.5)


def test_first_token_loss_is_dropped_only_where_asked():
    from e3rl.models import train_tokenizer
    from e3rl.warmstart import _batch

    tok = train_tokenizer(["1+2+3=1+2=3,3+3=6#6", "#6"] * 10 + ["0123456789"])
    _, _, labels = _batch(tok, [("1+2+3=", "1+2=3,3+3=6#6", False), ("1+2+3=", "#6", True)])
    plen = len(tok("1+2+3=", add_special_tokens=False)["input_ids"])
    assert labels[0, plen] == -100 and labels[0, plen + 1] != -100
    assert labels[1, plen] != -100
    assert (labels[:, :plen] == -100).all()


def test_the_announced_minutes_grow_with_the_models_weights_and_the_sequences():
    from e3rl.config import ModelConfig, TinyModelConfig, WarmStartConfig
    from e3rl.warmstart import warm_start_minutes

    ws = WarmStartConfig(steps=3000, batch_size=48)
    default = ModelConfig(warm_start=ws)
    assert warm_start_minutes(default) == pytest.approx(7.2)  # 144,000 sequences / 20,000
    wide = ModelConfig(tiny=TinyModelConfig(hidden_size=256, intermediate_size=1024), warm_start=ws)
    assert warm_start_minutes(wide) == pytest.approx(
        7.2 * (0.13 + 0.87 * 4)
    )  # 4x the weights: 26 min
    half = ModelConfig(warm_start=WarmStartConfig(steps=1500, batch_size=48))
    assert warm_start_minutes(half) == pytest.approx(3.6)


def test_a_saved_tokenizer_loads_under_transformers_4_too(tmp_path):
    """Bases and checkpoints name a tokenizer class transformers 4.x knows (5.x writes
    `TokenizersBackend`), and the file reloads to the same tokenizer here; with the floor venv
    of `make test-transformers-floor` present, transformers 4.56 loads it too."""
    import json
    import subprocess
    from pathlib import Path

    from transformers import AutoTokenizer

    from e3rl.tiny import save_tokenizer, train_tokenizer

    tok = train_tokenizer(["12+34=46", "7+8=15,1+2=3#15"])
    save_tokenizer(tok, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    text = "37+56=7+6=13,3+5+1=9#93"
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert (again.eos_token, again.pad_token) == (tok.eos_token, tok.pad_token)
    floor = Path(__file__).resolve().parents[1] / ".venv-compat" / "bin" / "python"
    if not floor.exists():
        return
    code = (
        "import sys, transformers as T; t = T.AutoTokenizer.from_pretrained(sys.argv[1]); "
        f"print(T.__version__, t({text!r})['input_ids'])"
    )
    out = subprocess.run([floor, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    version, ids = out.stdout.strip().split(" ", 1)
    assert version.startswith("4.") and json.loads(ids) == tok(text)["input_ids"]
