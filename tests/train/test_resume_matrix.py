"""Every configuration axis that changes what a checkpoint holds resumes bit-identically.

For each case a run is SIGKILLed at a checkpoint (just renamed into place) or mid-step (half of
a metrics line written, after the newest checkpoint), resumed, and compared with an
uninterrupted run of the same config: the same metrics rows and the same final weights, bit for
bit. The axes: learning-rate schedule (constant, cosine, linear) with the checkpoint inside the
warm-up or after it, LoRA, bf16 autocast, entropy temperature control, each allocator, the
transition forecast, skipping (`budget.skip_below`). (There is
no prompt-selection setting yet.) A cosine run checkpointed after its warm-up, the demo's path
that once failed to resume, runs by default (tests/train/test_resume.py covers the allocator and the
controller by default too); the rest are slow.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path

import pytest
import torch
from killrun import assert_same_run, log_of, rows, run_train
from safetensors.torch import load_file

from conftest import TINY
from e3rl import checkpoint as ckpt

TOTAL, SAVE_EVERY, WARMUP = 6, 2, 3  # checkpoints at 2 (inside the warm-up), 4 and 6 (after)
BASE = [
    *TINY,
    "task.train_size=12",  # batches of 4: epoch 2 starts at step 4 (the allocators' history)
    "reward.fn=toy_rewards:by_level",
    "data.val=null",
    f"trainer.total_steps={TOTAL}",
    f"trainer.save_every={SAVE_EVERY}",
    f"optim.warmup_steps={WARMUP}",
    "optim.lr=1e-3",
    "--quiet",
]
IN_WARMUP, AFTER_WARMUP, MID_STEP = "checkpoint-renamed:2", "checkpoint-renamed:4", "metrics-line:5"
EVERYTHING = [
    "optim.schedule=cosine",
    "model.lora.r=4",
    "model.dtype=bfloat16",
    "rollout.temperature_control=entropy",
    "budget.allocator=value",
    "budget.n_min=0",
    "budget.n_max=8",
]

CASES = {
    "cosine-after-warmup": (["optim.schedule=cosine"], AFTER_WARMUP),
    "everything-mid-step": (EVERYTHING, MID_STEP),
    "constant-in-warmup": (["optim.schedule=constant"], IN_WARMUP),
    "constant-after-warmup": (["optim.schedule=constant"], AFTER_WARMUP),
    "cosine-in-warmup": (["optim.schedule=cosine"], IN_WARMUP),
    "cosine-mid-step": (["optim.schedule=cosine"], MID_STEP),
    "linear-in-warmup": (["optim.schedule=linear"], IN_WARMUP),
    "linear-after-warmup": (["optim.schedule=linear"], AFTER_WARMUP),
    "lora": (["optim.schedule=cosine", "model.lora.r=4"], AFTER_WARMUP),
    "bf16": (["optim.schedule=cosine", "model.dtype=bfloat16"], AFTER_WARMUP),
    "temperature-control": (
        ["optim.schedule=cosine", "rollout.temperature_control=entropy"],
        AFTER_WARMUP,
    ),
    "rank-allocator": (
        ["budget.allocator=rank", "budget.n_low=2", "budget.n_high=6"],
        AFTER_WARMUP,
    ),
    "value-allocator": (
        ["budget.allocator=value", "budget.n_min=0", "budget.n_max=8"],
        AFTER_WARMUP,
    ),
    "transition-forecast": (  # the tracker's transition windows are in the checkpoint too
        [
            "budget.allocator=value",
            "budget.n_min=0",
            "budget.n_max=8",
            "budget.forecast=transition",
        ],
        AFTER_WARMUP,
    ),
    "skip-below": (  # skipped prompts and the re-check draws come from the control's saved rng
        ["budget.skip_below=0.5", "budget.recheck_prob=0.3"],
        AFTER_WARMUP,
    ),
}
FAST = ("cosine-after-warmup",)


def _params():
    marks = {True: (), False: (pytest.mark.slow,)}
    return [pytest.param(name, id=name, marks=marks[name in FAST]) for name in CASES]


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory):
    """Uninterrupted runs by case name, each trained once (shared by the tests below)."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            path = tmp_path_factory.mktemp(name) / "straight"
            assert run_train([*BASE, *CASES[name][0]], path) == 0, log_of(path)
            done[name] = path
        return done[name]

    return get


@pytest.fixture(autouse=True)
def _helpers_on_path(monkeypatch):
    """The toy reward lives in tests/helpers: the reward worker (a spawned process) imports it."""
    helpers = str(Path(__file__).parents[1] / "helpers")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [helpers, os.environ.get("PYTHONPATH")]))
    )


@pytest.mark.parametrize("name", _params())
def test_killed_and_resumed_run_is_bit_identical(tmp_path, straight_runs, name):
    extra, kill_at = CASES[name]
    args = [*BASE, *extra]
    straight, run = straight_runs(name), tmp_path / "run"

    assert run_train(args, run, kill_at) == -signal.SIGKILL, log_of(run)
    point, step = kill_at.split(":")
    newest = ckpt.list_checkpoints(run)[-1]
    expected = int(step) if point == "checkpoint-renamed" else int(step) - 1
    assert newest.name == f"step-{expected:06d}"  # the kill landed where it was aimed
    assert run_train(args, run, resume=True) == 0, log_of(run)
    assert_same_run(run, straight, name)
    lrs = [r["lr"] for r in rows(straight)]
    if "optim.schedule=cosine" in extra:  # the state under test: past the warm-up, decaying
        assert lrs[WARMUP - 1] > lrs[WARMUP] > lrs[WARMUP + 1] > 0


def _load_each(path: Path) -> None:
    """Loads a checkpoint file as resuming does: pickles only with weights_only=True."""
    if path.suffix in (".pt", ".bin"):
        torch.load(path, weights_only=True, map_location="cpu")
    elif path.suffix == ".safetensors":
        load_file(path)
    elif path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    else:
        data = path.read_bytes()
        assert not data.startswith(b"\x80"), f"{path}: an unexpected pickle"


def _assert_plain(x, where: str) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            _assert_plain(k, where)
            _assert_plain(v, f"{where}.{k}")
    elif isinstance(x, list | tuple):
        for i, v in enumerate(x):
            _assert_plain(v, f"{where}[{i}]")
    else:
        assert isinstance(x, torch.Tensor | torch.Size | int | float | str | bool | None), (
            f"{where}: {type(x).__name__}"
        )


@pytest.mark.parametrize(
    "name", ["cosine-after-warmup", pytest.param("everything-mid-step", marks=pytest.mark.slow)]
)
def test_every_checkpoint_file_loads_with_weights_only(straight_runs, name):
    """After the warm-up the cosine factor is computed with numpy: it must reach the checkpoint
    as a Python float (a numpy float made optim.pt unloadable)."""
    path = ckpt.list_checkpoints(straight_runs(name))[0]
    assert path.name == "step-000004"  # past the warm-up
    files = sorted(p for p in path.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"optim.pt", "state.json"} <= names and any(n.endswith(".safetensors") for n in names)
    for f in files:
        _load_each(f)
    optim_state = torch.load(path / "optim.pt", weights_only=True)
    _assert_plain(optim_state, "optim.pt")
    assert optim_state["scheduler"]["_last_lr"][0] < 1e-3  # past the warm-up: decaying


def test_numpy_scalars_are_made_plain_before_saving():
    import numpy as np

    state = {"a": [np.float64(0.25), (np.int64(3), 1.5)], "t": torch.ones(2)}
    out = ckpt.plain(state)
    assert type(out["a"][0]) is float and out["a"][0] == 0.25
    assert type(out["a"][1][0]) is int and isinstance(out["a"][1], tuple)
    assert out["t"] is state["t"]
    with pytest.raises(pickle.UnpicklingError):  # what the fix avoids
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        torch.load(buf, weights_only=True)
