"""The speed benchmarks run end to end with tiny counts and record equal work (slow: minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH_PY = REPO / ".venv-bench" / "bin" / "python"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def _run(python, script: str, *args: str) -> None:
    proc = subprocess.run(
        [str(python), str(REPO / "benchmarks" / script), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not BENCH_PY.exists(), reason="needs .venv-bench with TRL: make bench-trl-venv")
def test_trl_speed_runs_and_both_trainers_do_the_same_work(tmp_path):
    out = tmp_path / "trl.json"
    _run(BENCH_PY, "trl_speed.py", "--steps", "1", "--warmup", "1", "--threads", "1",
         "--lengths", "4", "--out", str(out))  # fmt: skip
    res = json.loads(out.read_text())
    r = res["results"]["4"]
    assert res["model"]["parameters"] == 4_297_984 and res["model"]["vocab_size"] == 384
    for name in ("trl", "e3rl"):
        assert len(r[name]["steps"]) == 2
        assert all(s["generated_tokens"] == s["trained_tokens"] == 256 for s in r[name]["steps"])
    floor = (2 + 6) * 4_297_984 * 256 / (res["matmul"]["median_gflops"] * 1e9)
    assert r["floor_s"] == pytest.approx(floor)
    assert r["e3rl_over_trl"] == pytest.approx(
        r["e3rl"]["median"]["step_s"] / r["trl"]["median"]["step_s"]
    )


@pytest.mark.slow
def test_throughput_and_scaling_run(tmp_path):
    _run(sys.executable, "throughput.py", "--repeats", "1", "--warmup", "1", "--threads", "1",
         "--lengths", "4", "--out", str(tmp_path / "tp.json"))  # fmt: skip
    tp = json.loads((tmp_path / "tp.json").read_text())["results"]["4"]
    assert tp["tokens_per_call"] == 256 and tp["engine"]["tokens_per_s"] > 0
    assert tp["engine_hf_decode"]["tokens_per_s"] > 0
    _run(sys.executable, "scaling.py", "--steps", "1", "--warmup", "0", "--threads", "1",
         "--prompts", "2", "--lengths", "--sizes", "--micro-batches", "--out", str(tmp_path / "sc.json"),
         "--figure", str(tmp_path / "sc.png"))  # fmt: skip
    rec = json.loads((tmp_path / "sc.json").read_text())["records"]
    assert [(r["prompts"], r["length"]) for r in rec] == [(2, 64)]
    assert rec[0]["peak_rss_mib"] >= rec[0]["base_rss_mib"] > 0
    assert rec[0]["median"]["generated_tokens"] == 2 * 8 * 64


@pytest.mark.slow
def test_decode_kernels_runs(tmp_path):
    _run(sys.executable, "decode_kernels.py", "--repeats", "2", "--threads", "1",
         "--out", str(tmp_path / "dk.json"))  # fmt: skip
    res = json.loads((tmp_path / "dk.json").read_text())
    assert len(res["projections"]) == 6 and [s["vocab"] for s in res["sampling"]] == [384, 49152]
    assert all(r["speedup"] > 0 for r in res["projections"] + res["sampling"])


@pytest.mark.slow
def test_compile_update_runs(tmp_path):
    _run(sys.executable, "compile_update.py", "--lengths", "8", "6", "--threads", "1",
         "--out", str(tmp_path / "cu.json"))  # fmt: skip
    res = json.loads((tmp_path / "cu.json").read_text())
    assert [r["length"] for r in res["rounds"]] == [8, 6]
    assert all(r["trained_tokens"] == 64 * r["length"] for r in res["rounds"])
