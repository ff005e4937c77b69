import json

import pytest

from conftest import DATA_E3
from e3rl.config import TaskConfig
from e3rl.data import DataError, encode_prompts, load_file, load_source, parse_source


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_jsonl_json_and_ids_are_stable(tmp_path):
    rows = [{"prompt": "1+1?", "answer": "2", "level": 1}, {"question": "2+2?", "answer": 4}]
    a = load_file(_write(tmp_path, "a.jsonl", "\n".join(json.dumps(r) for r in rows)))
    b = load_file(_write(tmp_path, "b.json", json.dumps(list(reversed(rows)))))
    assert [p.answer for p in a] == ["2", "4"] and a[0].meta == {"level": 1}
    assert {p.id for p in a} == {p.id for p in b}  # ids follow content, not position
    assert a[0].messages == [{"role": "user", "content": "1+1?"}]


def test_verl_style_jsonl(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "x?"}],
        "data_source": "math",
        "reward_model": {"ground_truth": "7", "style": "rule"},
    }
    (p,) = load_file(_write(tmp_path, "v.jsonl", json.dumps(row)))
    assert p.answer == "7" and p.meta["data_source"] == "math"


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("bad.jsonl", '{"prompt": "a", "answer": "1"}\n{oops\n', ["bad.jsonl:2", "not valid JSON"]),
        ("noans.jsonl", '{"prompt": "a"}\n', ["noans.jsonl:1", "no answer"]),
        ("noprompt.jsonl", '{"answer": "1"}\n', ["no prompt field"]),
        ("empty.jsonl", "\n\n", ["holds no usable records"]),
        ("allempty.jsonl", '{"prompt": "a", "answer": ""}', ["1 skipped", "answer is empty"]),
        ("emptyprompt.jsonl", '{"prompt": "  ", "answer": "1"}', ["prompt is empty"]),
        ("type.jsonl", '{"prompt": 5, "answer": "1"}', ["non-empty string or a list"]),
        ("x.csv", "a,b", ["unknown format"]),
        ("notparquet.parquet", "hello", ["not a readable parquet"]),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, name, text, words):
    with pytest.raises(DataError) as e:
        load_file(_write(tmp_path, name, text))
    for w in words:
        assert w in str(e.value)


def test_non_utf8_and_missing(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"prompt": "a", "answer": "1"}\n{"prompt": "\xe9", "answer": "1"}\n')
    with pytest.raises(DataError, match="latin.jsonl:2: not UTF-8"):
        load_file(p)
    with pytest.raises(DataError, match="does not exist"):
        load_file(tmp_path / "nope.jsonl")


def test_task_splits_are_deterministic_and_disjoint():
    task = TaskConfig(train_size=300, val_size=60)
    train, val = load_source("arith:train", task), load_source("arith:val", task)
    assert len(train) == 300 and len(val) == 60
    assert not {p.id for p in train} & {p.id for p in val}
    assert [p.id for p in load_source("arith:train", task)] == [p.id for p in train]
    assert {p.meta["level"] for p in train} == set(task.levels)


def test_too_long_prompts_dropped_or_rejected(tiny):
    _, tok, _ = tiny
    prompts = load_source("arith:val", TaskConfig(levels=[1, 6], train_size=10, val_size=10))
    enc = encode_prompts(prompts, tok, max_prompt_tokens=5)
    assert enc.dropped > 0 and all(len(t) <= 5 for t in enc.token_ids)
    with pytest.raises(DataError, match="over data.max_prompt_tokens=5"):
        encode_prompts(prompts, tok, 5, on_too_long="error")
    with pytest.raises(DataError, match="all 10 prompts are longer"):
        encode_prompts(prompts, tok, 1)


needs_e3 = pytest.mark.skipif(not DATA_E3.is_dir(), reason=f"{DATA_E3} not present")


@needs_e3
def test_paper_data_loads_as_is():
    train = load_file(DATA_E3 / "train_data.parquet")
    # Six records of the authors' training file have an empty ground truth: skipped, listed.
    assert len(train.skipped) == 6 and "row 1448: the answer is empty" in train.skipped[0]
    valid = load_file(DATA_E3 / "valid_data.parquet")
    test = load_file(DATA_E3 / "test.json")
    assert (len(train), len(valid), len(test)) == (10240 - 6, 512, 1288)
    assert train[0].answer == "843" and train[0].messages[0]["role"] == "user"
    assert "S_7" in train[0].messages[0]["content"]
    assert valid[0].answer == "54" and valid[0].meta["data_source"] == "aime"
    assert test[0].answer == "204" and "Aya" in test[0].messages[0]["content"]
    allp = load_file(DATA_E3 / "all_data.parquet")
    assert len(allp) + len(allp.skipped) == 15888 and "level" in allp[0].meta
    assert test[0].meta["data_source"] == "aime"


def test_a_slice_keeps_the_skipped_records(tmp_path):
    # data.train_limit / val_limit slice the prompt set: the skipped records must still be told
    text = "\n".join(
        json.dumps(r)
        for r in [{"prompt": "a", "answer": ""}]
        + [{"prompt": f"{k}+1?", "answer": str(k + 1)} for k in range(3)]
    )
    prompts = load_file(_write(tmp_path, "p.jsonl", text))
    head = prompts[:2]
    assert [p.answer for p in head] == ["1", "2"]
    assert head.skipped == prompts.skipped and len(head.skipped) == 1
    assert prompts[0].answer == "1"


def test_parse_source_tells_task_splits_from_files(tmp_path, monkeypatch):
    assert parse_source("arith:train") == ("arith", "train")
    assert parse_source("arith:val") == ("arith", "val")
    assert parse_source("data/train.jsonl") is None
    assert parse_source("nosuchtask:train") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "arith:train").write_text("")  # an existing file wins over the task name
    assert parse_source("arith:train") is None
