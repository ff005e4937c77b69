"""The paper's data (../shared/data/e3) through the real CLI, unchanged: `e3rl train` on
train_data.parquet / valid_data.parquet and `e3rl eval` on test.json, with the math-verify reward.

A tiny random model scores about zero on competition math; the point is the data path: verl rows
load as they are, prompts over data.max_prompt_tokens are dropped and counted, and the reward runs
on every response without errors. The tiny tokenizer has no chat template, so the chat messages
are rendered as plain text.
"""

from __future__ import annotations

import json
import re

import pytest
from cli import run_cli

from conftest import DATA_E3, TINY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not DATA_E3.is_dir(), reason=f"{DATA_E3} not present"),
]

MAX_PROMPT_TOKENS = 200  # about half of the training prompts are longer for the tiny tokenizer


def test_one_step_on_the_papers_parquet_then_eval_on_its_test_set(tmp_path):
    from transformers import AutoTokenizer

    from e3rl.data import encode_prompts, load_file

    run = tmp_path / "run"
    res = run_cli(
        "train",
        *TINY,
        f"data.train={DATA_E3 / 'train_data.parquet'}",
        f"data.val={DATA_E3 / 'valid_data.parquet'}",
        "data.val_limit=8",
        f"data.max_prompt_tokens={MAX_PROMPT_TOKENS}",
        "reward.fn=math",
        "trainer.total_steps=1",
        f"trainer.output_dir={run}",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    log = " ".join(res.stderr.split())
    assert "skipped 6 training records" in log  # six rows of train_data.parquet have no answer
    dropped = re.search(r"dropped (\d+) training prompts over data.max_prompt_tokens=200", log)
    assert dropped, log

    # The count is right: the run's own tokenizer drops exactly as many.
    tok = AutoTokenizer.from_pretrained(run / "final")
    train = load_file(DATA_E3 / "train_data.parquet")
    expected = encode_prompts(train, tok, MAX_PROMPT_TOKENS).dropped
    assert int(dropped.group(1)) == expected
    assert 0 < expected < len(train)

    (row,) = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert row["step"] == 1 and row["rollouts"] == 16 and row["tokens"] > 0
    assert row["reward_errors"] == 0 and row["reward_timeouts"] == 0
    assert 0.0 <= row["reward_mean"] <= 1.0 and "val_accuracy" in row

    out = tmp_path / "eval"
    res = run_cli(
        "eval",
        str(run / "final"),
        "--data",
        str(DATA_E3 / "test.json"),
        "--limit",
        "16",
        "--n",
        "2",
        "--k",
        "1,2",
        "--max-new-tokens",
        "8",
        "--reward",
        "math",
        "--output-dir",
        str(out),
        f"data.max_prompt_tokens={MAX_PROMPT_TOKENS}",
    )
    assert res.returncode == 0, res.stderr
    ev = json.loads((out / "eval.json").read_text())
    assert ev["dropped_prompts"] > 0 and ev["num_prompts"] == 16 - ev["dropped_prompts"]
    assert ev["reward_errors"] == 0 and ev["reward_timeouts"] == 0
    assert set(ev["pass_at_k"]) == {"1", "2"}
    assert {i["data_source"] for i in ev["items"]} <= {"aime", "amc", "math", "olympiad_bench"}
