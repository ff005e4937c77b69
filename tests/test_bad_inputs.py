"""Bad inputs through the CLI: each gives one clear line on stderr and exit code 2 (1 for a run
that went wrong), never a traceback; or, where documented, a skip with a count.

Each case names what the error line must say: the file, line, field or value at fault and what
would be valid. The default run calls `e3rl.cli:main` (the console script's entry point) in this
process, which is fast; `test_every_case_in_a_subprocess` (slow) runs every case as a user does,
and `test_some_cases_in_a_subprocess` a few of them by default.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli import run_cli

from conftest import TINY

GOOD = [{"prompt": f"{a}+{a}=", "answer": str(2 * a)} for a in range(1, 9)]


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@dataclass
class Case:
    name: str
    setup: Callable[[Path], tuple[list[str], list[str]]]
    """tmp dir -> (CLI arguments, substrings the error line must hold)."""
    code: int = 2
    env: dict | None = None


CASES: list[Case] = []


def case(code: int = 2, env: dict | None = None):
    def register(fn):
        CASES.append(Case(fn.__name__, fn, code, env))
        return fn

    return register


def train(tmp: Path, *overrides: str) -> list[str]:
    return [
        "train",
        *TINY,
        "data.val=null",
        "trainer.total_steps=1",
        f"trainer.output_dir={tmp / 'run'}",
        *overrides,
    ]


def data_file(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def train_on(tmp: Path, name: str, content: str | bytes, *overrides: str) -> list[str]:
    return train(tmp, f"data.train={data_file(tmp, name, content)}", *overrides)


# ----------------------------------------------------------------------------- data files


@case()
def malformed_jsonl_line(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl(GOOD[:2]) + '{"prompt": "1+1=", "answer": \n')
    return args, [f"{tmp / 'd.jsonl'}:3", "not valid JSON", "column"]


@case()
def non_utf8_bytes(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl(GOOD[:1]).encode() + b'{"prompt": "\xff\xfe"}\n')
    return args, [f"{tmp / 'd.jsonl'}:2", "not UTF-8"]


@case()
def prompt_of_wrong_type(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([*GOOD[:3], {"prompt": 12, "answer": "1"}]))
    return args, [f"{tmp / 'd.jsonl'}:4", "prompt must be a non-empty string or a list", "int"]


@case()
def answer_of_wrong_type(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([{"prompt": "1+1=", "answer": {"x": 2}}]))
    return args, [f"{tmp / 'd.jsonl'}:1", "answer must be a string or a number", "dict"]


@case()
def chat_message_without_content(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([{"prompt": [{"role": "user"}], "answer": "2"}]))
    return args, [f"{tmp / 'd.jsonl'}:1", "prompt message 0", "string 'content'"]


@case()
def record_is_not_an_object(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([*GOOD[:1], ["1+1=", "2"]]))
    return args, [f"{tmp / 'd.jsonl'}:2", "expected a JSON object per record", "list"]


@case()
def missing_answer(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([*GOOD[:2], {"prompt": "1+1="}]))
    return args, [f"{tmp / 'd.jsonl'}:3", "no answer", "reward_model.ground_truth", "answer"]


@case()
def missing_prompt(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([{"text": "1+1=", "answer": "2"}]))
    return args, [f"{tmp / 'd.jsonl'}:1", "no prompt field", "prompt, messages", "found: text"]


@case()
def null_prompt(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([*GOOD[:1], {"prompt": None, "answer": "2"}]))
    return args, [f"{tmp / 'd.jsonl'}:2", "the prompt field 'prompt' is null", "non-empty string"]


@case()
def empty_prompt(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl([*GOOD[:1], {"prompt": "   ", "answer": "2"}]))
    return args, [f"{tmp / 'd.jsonl'}:2", "the prompt is empty"]


@case()
def empty_data_set(tmp):
    return train_on(tmp, "d.jsonl", "\n\n"), [str(tmp / "d.jsonl"), "no usable records"]


@case()
def every_answer_empty(tmp):
    rows = [{"prompt": "1+1=", "answer": ""}, {"prompt": "2+2=", "answer": " "}]
    args = train_on(tmp, "d.jsonl", _jsonl(rows))
    return args, [str(tmp / "d.jsonl"), "no usable records", "2 skipped", "answer is empty"]


@case()
def all_prompts_too_long(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl(GOOD), "data.max_prompt_tokens=2")
    return args, [str(tmp / "d.jsonl"), "all 8 prompts", "data.max_prompt_tokens=2"]


@case()
def prompt_too_long_with_on_too_long_error(tmp):
    rows = [*GOOD, {"prompt": "1+1=" * 200, "answer": "2"}]
    args = train_on(tmp, "d.jsonl", _jsonl(rows), "data.on_too_long=error")
    return args, [f"{tmp / 'd.jsonl'}:9", "has 801 tokens, over data.max_prompt_tokens=512"]


@case()
def fewer_prompts_than_a_batch(tmp):
    args = train_on(tmp, "d.jsonl", _jsonl(GOOD[:3]))  # TINY: data.batch_size=4
    return args, [str(tmp / "d.jsonl"), "3 usable training prompts", "data.batch_size=4"]


@case()
def json_file_that_is_not_a_list(tmp):
    return train_on(tmp, "d.json", '"just a string"'), [str(tmp / "d.json"), "list of records"]


@case()
def unknown_data_format(tmp):
    args = train_on(tmp, "d.csv", "prompt,answer\n1+1=,2\n")
    return args, [str(tmp / "d.csv"), "unknown format '.csv'", ".jsonl, .json or .parquet"]


@case()
def missing_data_file(tmp):
    args = train(tmp, f"data.train={tmp / 'nope.jsonl'}")
    return args, [str(tmp / "nope.jsonl"), "does not exist"]


@case()
def data_path_is_a_directory(tmp):
    return train(tmp, f"data.train={tmp}"), [str(tmp), "is a directory", ".jsonl"]


@case()
def parquet_that_is_not_parquet(tmp):
    args = train_on(tmp, "d.parquet", b"PAR1 but not really")
    return args, [str(tmp / "d.parquet"), "not a readable parquet file"]


@case()
def parquet_with_wrong_columns(tmp):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp / "d.parquet"
    pq.write_table(pa.table({"question_text": ["1+1="], "label": ["2"]}), path)
    args = train(tmp, f"data.train={path}")
    return args, [f"{path} row 0", "no prompt field", "found: question_text, label"]


@case()
def parquet_with_wrong_column_types(tmp):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp / "d.parquet"
    pq.write_table(pa.table({"prompt": [1.5], "answer": ["2"]}), path)
    args = train(tmp, f"data.train={path}")
    return args, [f"{path} row 0", "prompt must be", "float"]


@case()
def unknown_task_split(tmp):
    return train(tmp, "data.train=arith:test"), ["arith:test", "does not exist", "'train'"]


@case()
def bad_validation_file(tmp):
    args = train(tmp, f"data.val={data_file(tmp, 'v.jsonl', '{oops}')}")
    return args, [f"{tmp / 'v.jsonl'}:1", "not valid JSON"]


# ----------------------------------------------------------------------------- configuration


@case()
def unknown_key(tmp):
    return train(tmp, "trainer.total_stepz=3"), ["trainer.total_stepz", "'trainer.total_steps'"]


@case()
def unknown_section(tmp):
    return train(tmp, "traner.total_steps=3"), ["'traner'", "did you mean 'trainer.total_steps'"]


@case()
def unknown_nested_key(tmp):
    args = train(tmp, "model.tiny.hiden_size=8")
    return args, ["model.tiny.hiden_size", "did you mean 'model.tiny.hidden_size'"]


@case()
def value_of_wrong_type(tmp):
    return train(tmp, "rollout.n=many"), ["rollout.n='many'", "expected an integer"]


@case()
def float_for_an_integer(tmp):
    return train(tmp, "data.batch_size=2.5"), ["data.batch_size=2.5", "expected an integer"]


@case()
def not_a_boolean(tmp):
    return train(tmp, "data.shuffle=maybe"), ["data.shuffle='maybe'", "true or false"]


@case()
def mistyped_choice(tmp):
    args = train(tmp, "budget.allocator=rnak")
    return args, ["budget.allocator='rnak'", "'uniform', 'rank', 'value'", "did you mean 'rank'"]


@case()
def out_of_range_temperature(tmp):
    return train(tmp, "rollout.temperature=0"), ["rollout.temperature=0", "finite float > 0"]


@case()
def out_of_range_clip(tmp):
    return train(tmp, "algo.clip_low=1.5"), ["algo.clip_low=1.5", "[0, 1)"]


@case()
def out_of_range_max_bad_steps(tmp):
    return train(tmp, "trainer.max_bad_steps=0"), ["trainer.max_bad_steps=0", ">= 1"]


@case()
def list_of_wrong_length(tmp):
    return train(tmp, "optim.betas=[0.9]"), ["optim.betas=[0.9]", "two floats in [0, 1)"]


@case()
def infeasible_budget(tmp):
    args = train(tmp, "budget.allocator=value", "rollout.n=20")
    return args, ["rollout.n=20", "[budget.n_min, budget.n_max] = [2, 16]"]


@case()
def section_given_a_value(tmp):
    return train(tmp, "trainer=5"), ["trainer must be a mapping", "5"]


@case()
def bad_device(tmp):
    return train(tmp, "trainer.device=tpu"), ["trainer.device='tpu'", "'cpu'"]


@case()
def bad_yaml(tmp):
    path = data_file(tmp, "c.yaml", "trainer:\n  total_steps: [1, 2\nrollout: {}\n")
    return ["train", str(path)], [str(path), "line", "not valid YAML"]


@case()
def yaml_that_is_a_list(tmp):
    path = data_file(tmp, "c.yaml", "- trainer\n- rollout\n")
    return ["train", str(path)], [str(path), "must hold a mapping of sections"]


@case()
def yaml_section_of_wrong_type(tmp):
    path = data_file(tmp, "c.yaml", "rollout: 8\n")
    return ["train", str(path)], ["rollout must be a mapping", "8"]


@case()
def missing_config_file(tmp):
    return ["train", str(tmp / "c.yaml")], [str(tmp / "c.yaml"), "does not exist"]


@case()
def base_cycle(tmp):
    data_file(tmp, "a.yaml", "base: b.yaml\nrollout: {n: 4}\n")
    data_file(tmp, "b.yaml", "base: a.yaml\n")
    a, b = (tmp / "a.yaml").resolve(), (tmp / "b.yaml").resolve()
    return ["train", str(tmp / "a.yaml")], ["base: chain is a cycle", f"{a} -> {b} -> {a}"]


@case()
def empty_output_dir(tmp):
    return train(tmp, "trainer.output_dir="), ["trainer.output_dir=''", "a directory path"]


@case()
def two_config_files(tmp):
    return ["train", "a.yaml", "b.yaml"], ["at most one config file", "key=value"]


@case()
def override_without_key(tmp):
    return train(tmp, "=5"), ["'=5'", "empty key"]


# ----------------------------------------------------------------------------- model


def _model_dir(tmp: Path, weights: bool, tokenizer: bool) -> Path:
    path = tmp / "model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"\0" * 16)
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


@case()
def model_path_missing(tmp):
    return train(tmp, f"model.path={tmp / 'nope'}"), [str(tmp / "nope"), "does not exist"]


@case()
def model_dir_without_weights(tmp):
    path = _model_dir(tmp, weights=False, tokenizer=True)
    return train(tmp, f"model.path={path}"), [str(path), "no weights", "*.safetensors"]


@case()
def model_dir_without_tokenizer(tmp):
    path = _model_dir(tmp, weights=True, tokenizer=False)
    return train(tmp, f"model.path={path}"), [str(path), "no tokenizer", "tokenizer.json"]


@case()
def model_dir_without_config(tmp):
    path = tmp / "model"
    path.mkdir()
    return train(tmp, f"model.path={path}"), [str(path), "no config.json"]


@case()
def model_dir_with_corrupt_files(tmp):
    path = _model_dir(tmp, weights=True, tokenizer=True)
    return train(tmp, f"model.path={path}"), [str(path), "cannot load"]


def _gpt2_dir(tmp: Path, n_positions: int) -> Path:
    """A tiny GPT-2 (absolute positions: past n_positions its embedding lookup fails)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from e3rl.models import train_tokenizer

    tok = train_tokenizer([f"{a}+{a}={2 * a}" for a in range(50)] + ["0123456789"])
    cfg = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=16, n_layer=1, n_head=2)
    path = tmp / "gpt2"
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@case()
def prompt_and_response_beyond_the_models_positions(tmp):
    path = _gpt2_dir(tmp, n_positions=48)
    args = train_on(tmp, "d.jsonl", _jsonl(GOOD), f"model.path={path}", "rollout.max_new_tokens=60")
    return args, [
        "rollout.max_new_tokens=60",
        "over the model's 48",
        "data.max_prompt_tokens + rollout.max_new_tokens <= 48",
    ]


@case()
def gguf_that_is_not_gguf(tmp):
    path = data_file(tmp, "m.gguf", b"not a gguf file at all")
    return train(tmp, f"model.path={path}"), [str(path), "not a GGUF file"]


# ----------------------------------------------------------------------------- output, reward


@case()
def output_dir_not_writable(tmp):
    blocker = data_file(tmp, "file", "a regular file")
    args = ["train", *TINY, f"trainer.output_dir={blocker / 'sub'}"]
    return args, [str(blocker / "sub"), "not writable"]


@case()
def reward_module_does_not_import(tmp):
    args = train(tmp, "reward.fn=no_such_module:score")
    return args, ["reward.fn='no_such_module:score'", "cannot import module 'no_such_module'"]


@case()
def reward_function_does_not_exist(tmp):
    args = train(tmp, "reward.fn=toy_rewards:no_such_fn")
    return args, ["reward.fn='toy_rewards:no_such_fn'", "no function 'no_such_fn'"]


@case()
def reward_of_the_wrong_signature(tmp):
    args = train(tmp, "reward.fn=toy_rewards:one_argument")
    return args, ["reward.fn='toy_rewards:one_argument'", "fn(response: str, answer: str, **info)"]


@case(code=1)
def reward_that_fails_every_call(tmp):
    args = train(tmp, "reward.fn=toy_rewards:needs_unknown_info")
    return args, ["reward.fn='toy_rewards:needs_unknown_info' failed", "TypeError", "**info"]


@case()
def reward_name_unknown(tmp):
    args = train(tmp, "reward.fn=maths")
    return args, ["reward.fn='maths'", "'auto'", "'math'", "module:function"]


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 1-step run with a checkpoint and a final model, copied by the cases that corrupt it."""
    from e3rl.cli import main

    run = tmp_path_factory.mktemp("finished") / "run"
    args = ["train", *TINY, "data.val=null", f"trainer.output_dir={run}", "trainer.total_steps=1"]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--quiet"]) == 0
    return run


FINISHED: Path | None = None  # the finished run, for the cases in NEEDS_RUN


def _corrupt_run(tmp: Path, rel: str, content: bytes | None) -> tuple[list[str], Path]:
    run = tmp / "run"
    shutil.copytree(FINISHED, run)
    ckpt = run / "checkpoints" / "step-000001"
    target = ckpt / rel
    if content is None:  # truncate to half
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.write_bytes(content)
    return [*train(tmp, "trainer.total_steps=2"), "--resume"], ckpt


@case()
def truncated_optimizer_state(tmp):
    args, ckpt = _corrupt_run(tmp, "optim.pt", None)
    return args, [f"checkpoint {ckpt}", "corrupt"]


@case()
def garbage_state_json(tmp):
    args, ckpt = _corrupt_run(tmp, "state.json", b"\x00garbage{")
    return args, [f"checkpoint {ckpt}", "corrupt"]


@case()
def state_json_missing_fields(tmp):
    args, ckpt = _corrupt_run(tmp, "state.json", b'{"state": {"step": 1}}')
    return args, [f"checkpoint {ckpt}", "incomplete", "alloc_rng"]


@case()
def truncated_checkpoint_weights(tmp):
    args, ckpt = _corrupt_run(tmp, "model.safetensors", None)
    return args, [f"checkpoint {ckpt}", "the model is unreadable or corrupt", "SafetensorError"]


@case()
def garbage_run_config(tmp):
    args, _ = _corrupt_run(tmp, "state.json", None)
    (tmp / "run" / "config.yaml").write_text("trainer: [unclosed\n")
    return args, [str(tmp / "run" / "config.yaml"), "corrupt"]


@case()
def fresh_run_into_a_finished_run(tmp):
    shutil.copytree(FINISHED, tmp / "run")
    return train(tmp), [f"trainer.output_dir={tmp / 'run'}", "already holds a run", "--resume"]


# ----------------------------------------------------------------------------- eval


def evaluate(*args: str) -> list[str]:
    return ["eval", str(FINISHED / "final"), "--data", "arith:val", "--limit", "2", *args]


@case()
def eval_k_not_a_number(tmp):
    return evaluate("--n", "4", "--k", "1,two"), ["--k '1,two'", "comma-separated integers"]


@case()
def eval_k_above_n(tmp):
    return evaluate("--n", "4", "--k", "1,8"), ["--k '1,8'", "[1, --n=4]"]


@case()
def eval_k_zero(tmp):
    return evaluate("--n", "4", "--k", "0"), ["--k '0'", "[1, --n=4]"]


@case()
def eval_negative_n(tmp):
    return evaluate("--n", "-1"), ["--n -1", ">= 0"]


@case()
def eval_missing_data_file(tmp):
    args = ["eval", str(FINISHED / "final"), "--data", str(tmp / "nope.jsonl")]
    return args, [str(tmp / "nope.jsonl"), "does not exist"]


@case()
def eval_missing_model(tmp):
    return ["eval", str(tmp / "nope")], [str(tmp / "nope"), "does not exist"]


# ----------------------------------------------------------------------------- training errors


@case(code=1, env={"E3RL_TEST_NAN_STEPS": "1,2"})
def non_finite_updates_in_a_row(tmp):
    args = train(tmp, "trainer.max_bad_steps=2", "trainer.total_steps=3")
    return args, ["steps 1-2", "non-finite loss or gradient", "trainer.max_bad_steps=2"]


# ----------------------------------------------------------------------------- running them

NEEDS_RUN = {
    "fresh_run_into_a_finished_run",
    "truncated_optimizer_state",
    "garbage_state_json",
    "state_json_missing_fields",
    "truncated_checkpoint_weights",
    "garbage_run_config",
    "eval_k_not_a_number",
    "eval_k_above_n",
    "eval_k_zero",
    "eval_negative_n",
    "eval_missing_data_file",
}


def _params():
    return [pytest.param(c, id=c.name) for c in CASES]


def run_in_process(args: list[str]) -> tuple[int, str]:
    """`e3rl ARGS` through the console script's entry point, in this process."""
    from e3rl.cli import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(args)
        except SystemExit as e:  # argparse
            code = e.code
    return code, err.getvalue()


def check(c: Case, code: int, stderr: str, words: list[str]) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr  # one line: the error
    assert stderr.rstrip().endswith(errors[0]), stderr  # and it is the last word
    assert code == c.code, stderr
    for w in words:
        assert w in errors[0], f"{w!r} not in {errors[0]!r}"


def _prepare(c: Case, tmp_path, monkeypatch, request) -> tuple[list[str], list[str]]:
    global FINISHED
    if c.name in NEEDS_RUN:
        FINISHED = request.getfixturevalue("finished_run")
    for k, v in (c.env or {}).items():
        monkeypatch.setenv(k, v)
    return c.setup(tmp_path)


@pytest.mark.parametrize("c", _params())
def test_bad_input_gives_one_clear_line(c: Case, tmp_path, monkeypatch, request):
    args, words = _prepare(c, tmp_path, monkeypatch, request)
    code, stderr = run_in_process(args)
    check(c, code, stderr, words)


SUBPROCESS_SAMPLE = ("malformed_jsonl_line", "non_finite_updates_in_a_row")  # exit 2, exit 1


def _subprocess(c: Case, tmp_path, monkeypatch, request):
    args, words = _prepare(c, tmp_path, monkeypatch, request)
    helpers = str(Path(__file__).parent / "helpers")  # where toy_rewards lives
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [helpers, os.environ.get("PYTHONPATH")]))
    )
    res = run_cli(*args)
    check(c, res.returncode, res.stderr, words)


@pytest.mark.parametrize("c", [p for p in _params() if p.id in SUBPROCESS_SAMPLE])
def test_some_cases_in_a_subprocess(c, tmp_path, monkeypatch, request):
    _subprocess(c, tmp_path, monkeypatch, request)


@pytest.mark.slow
@pytest.mark.parametrize("c", _params())
def test_every_case_in_a_subprocess(c, tmp_path, monkeypatch, request):
    _subprocess(c, tmp_path, monkeypatch, request)


def test_the_suite_is_broad():
    assert len(CASES) >= 30


def test_a_max_prompt_tokens_beyond_the_models_positions_warns(tmp_path):
    """The tiny model has 256 positions and data.max_prompt_tokens defaults to 512: the short
    prompts fit, but the limit could not be met, so the log says so."""
    args = train(tmp_path, "trainer.total_steps=1", "--quiet")
    code, stderr = run_in_process(args)
    assert code == 0, stderr
    text = " ".join(stderr.split())
    assert (
        "warning: data.max_prompt_tokens=512 + rollout.max_new_tokens=8 exceeds the model's 256"
        in text
    )
    assert "lower data.max_prompt_tokens to 248" in text
    fits = train(tmp_path, "data.max_prompt_tokens=248", f"trainer.output_dir={tmp_path / 'b'}")
    code, stderr = run_in_process([*fits, "--quiet"])
    assert code == 0 and "exceeds the model" not in stderr


def test_skipped_and_dropped_records_are_counted(tmp_path):
    """Documented skips: an empty answer skips the record, a too-long prompt is dropped."""
    rows = [*GOOD, {"prompt": "3+3=", "answer": ""}, {"prompt": "1+1=" * 200, "answer": "2"}]
    args = train_on(tmp_path, "d.jsonl", _jsonl(rows), "trainer.total_steps=1", "--quiet")
    code, stderr = run_in_process(args)
    assert code == 0, stderr
    text = " ".join(stderr.split())  # the log wraps long lines
    assert f"skipped 1 training records, e.g. {tmp_path / 'd.jsonl'}:9: the answer is empty" in text
    assert "dropped 1 training prompts over data.max_prompt_tokens=512" in text
