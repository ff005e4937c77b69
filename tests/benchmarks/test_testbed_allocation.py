"""benchmarks/testbed_allocation.py: per-epoch means of the allocation metrics, by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import testbed_allocation as A  # noqa: E402


def _row(epoch: int, lo: float, mixed: float, levels: dict) -> dict:
    row = {key: 0.5 for key in A.SCALARS.values()}
    row.update(epoch=epoch, alloc_min=lo, frac_rollouts_mixed=mixed, alloc_by_level=levels)
    return row


def _write(d: Path, rows: list[dict]) -> None:
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_epoch_means_then_means_over_finished_runs(tmp_path):
    runs, records = tmp_path / "runs", tmp_path / "records"
    records.mkdir()
    _write(runs / "e3rl-s0", [_row(0, 8, 0.6, {"1": 8}), _row(0, 6, 0.4, {"1": 6}),
                              _row(1, 4, 0.2, {"1": 4, "2": 12})])  # fmt: skip
    _write(runs / "e3rl-s1", [_row(0, 2, 1.0, {"1": 2}), _row(1, 8, 0.4, {"1": 8, "2": 8})])
    _write(runs / "e3rl-s2", [_row(0, 0, 0.0, {"1": 0})])  # still running: no record
    for name in ("e3rl-s0", "e3rl-s1"):
        (records / f"{name}.json").write_text("{}")
    res = A.collect(runs, records)
    assert res["e3rl"]["seeds"] == [0, 1]
    e0, e1 = res["e3rl"]["epochs"][0], res["e3rl"]["epochs"][1]
    # seed 0's epoch 0 is (8 + 6) / 2 = 7 and 0.5; seed 1's 2 and 1.0; their means:
    assert e0["alloc_min"] == pytest.approx(4.5) and e0["mixed"] == pytest.approx(0.75)
    assert e0["alloc_by_level"] == {"1": pytest.approx(4.5)}
    assert e1["alloc_by_level"] == {"1": pytest.approx(6), "2": pytest.approx(10)}
    assert e0["runs"] == 2 and e0["steps"] == 2  # seed 0's steps in the epoch
    assert "| e3rl | 2 | 1 |" in A.to_markdown(res)


def test_merge_keeps_arms_not_found_and_replaces_those_found(tmp_path):
    path = tmp_path / "allocation.json"
    path.write_text(json.dumps({"e3rl": {"seeds": [0], "epochs": {"0": {"mixed": 0.1}}},
                                "value": {"seeds": [0], "epochs": {"0": {"mixed": 0.2}}}}))  # fmt: skip
    found = {"value": {"seeds": [0, 1], "epochs": {0: {"mixed": 0.3}}}}
    res = A.merge(path, found)
    assert list(res) == ["e3rl", "value"] and res["e3rl"]["epochs"]["0"]["mixed"] == 0.1
    assert res["value"] == {"seeds": [0, 1], "epochs": {"0": {"mixed": 0.3}}}
    assert A.merge(tmp_path / "absent.json", found)["value"]["seeds"] == [0, 1]
