"""One writer per run directory: the lock is held for the whole run, a second run fails at once
naming the holder, and the lock of a killed run is taken over with a message."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import TINY
from e3rl.runlock import LOCK_NAME, RunLocked, run_lock

ARGS = [*TINY, "data.val=null", "data.batch_size=2", "rollout.n=2", "--quiet"]


def test_a_second_holder_is_refused_until_the_first_lets_go(tmp_path):
    run = tmp_path / "run"
    with run_lock(run) as note:
        assert note is None  # a new directory: nothing taken over
        assert (run / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on ")
        # flock: a second open file description conflicts even in one process
        with (
            pytest.raises(RunLocked, match=f"in use by pid {os.getpid()} on .*{LOCK_NAME}"),
            run_lock(run),
        ):
            pass
    with run_lock(run) as note:  # released, and emptied: a clean exit leaves nothing to report
        assert note is None


def test_the_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("pid 4194999 on some-host\n")  # left by a killed run
    with run_lock(run) as note:
        assert "took over the lock" in note and "pid 4194999 on some-host" in note


def test_an_exception_releases_the_lock(tmp_path):
    with pytest.raises(ZeroDivisionError), run_lock(tmp_path):
        raise ZeroDivisionError
    with run_lock(tmp_path):
        pass


def _main(*args: str) -> tuple[int, str]:
    """`e3rl ARGS` through the console script's entry point, in this process."""
    from e3rl.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, " ".join(err.getvalue().split())


def test_a_second_train_fails_fast_and_a_killed_holder_is_taken_over(tmp_path):
    run = tmp_path / "run"
    common = [*ARGS, "trainer.save_every=0", f"trainer.output_dir={run}"]
    holder = subprocess.Popen(
        [sys.executable, "-m", "e3rl.cli", "train", *common, "trainer.total_steps=500"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metrics = run / "metrics.jsonl"
        deadline = time.time() + 300
        while time.time() < deadline and not (metrics.is_file() and metrics.read_text()):
            time.sleep(0.01)
        assert holder.poll() is None, "the first run ended before it could be tested"
        import e3rl.trainer  # noqa: F401  (import time is not what is measured)

        t0 = time.perf_counter()
        code, err = _main("train", *common, "trainer.total_steps=2", "--resume")
        assert code == 2 and f"is in use by pid {holder.pid} on" in err, err
        assert time.perf_counter() - t0 < 30  # refused at start-up, before loading a model
        steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
        assert steps == sorted(steps)  # the second run wrote nothing
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    code, err = _main("train", *common, "trainer.total_steps=2", "--resume")
    assert code == 0, err
    assert f"took over the lock {run / LOCK_NAME} left by pid {holder.pid}" in err
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [
        1,
        2,
    ]


def test_report_refuses_interleaved_metrics(tmp_path):
    """What two writers leave (the lock now prevents it) is refused, naming the file; a resumed
    run's re-logged steps are not."""
    from e3rl.runs import interleaved_at, load_run

    assert interleaved_at([1, 2, 1, 3, 2, 4]) == 3
    assert interleaved_at([1, 2, 3, 4, 3, 4, 5]) is None  # resumed from step 2, re-logged
    assert interleaved_at([1, 2, 3]) is None and interleaved_at([]) is None
    run = tmp_path / "run"
    run.mkdir()
    path = run / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in [1, 2, 1, 3, 2, 4]))
    with pytest.raises(ValueError, match=f"{path}: the steps are interleaved .record 4 is step 3"):
        load_run(run)
    code, err = _main("report", str(run), "--out", str(tmp_path / "report"))
    assert code == 2 and "two runs wrote this directory" in err and "Traceback" not in err


def test_lock_file_does_not_count_as_a_run(tmp_path):
    """A directory holding only a lock (a run killed before its first row) is a fresh start."""
    from e3rl.resume import check_fresh_start

    with run_lock(tmp_path / "run"):
        pass
    check_fresh_start(tmp_path / "run")
