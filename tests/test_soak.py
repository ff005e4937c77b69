"""A shortened soak (benchmarks/soak.py runs 500 steps): open file descriptors do not grow."""

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_sixty_steps_do_not_grow_open_files(tmp_path):
    path = Path(__file__).parents[1] / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak", path)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)

    res = soak.soak(steps=60, every=10, save_every=20, run_dir=tmp_path)
    fds = [s["fds"] for s in res["samples"]]
    assert [s["step"] for s in res["samples"]] == [10, 20, 30, 40, 50, 60]
    assert max(fds) <= fds[0], fds  # checkpoints every 20 steps leave no descriptor open
