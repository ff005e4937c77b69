"""One writer per run directory: an exclusive `flock` on `RUN_DIR/.lock`, held for the whole run.

The kernel drops a `flock` when its holder exits, however it exits (SIGKILL and OOM included), so
a lock file left behind by a dead process is never "held": the next run takes it over and says
so. The file records the holder's pid and host, for the message a second run gets.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from e3rl.train.resume import ResumeError

LOCK_NAME = ".lock"


class RunLocked(ResumeError):
    """Another process is writing this run directory."""


def _holder(path: Path) -> str:
    """What the lock file says of its last holder ('' once a run ended cleanly and emptied it)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def _open_lock(run_dir: Path) -> tuple[int, Path, bool]:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_NAME
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ResumeError(
            f"trainer.output_dir={run_dir} is not writable ({e.strerror or e}): choose another "
            "trainer.output_dir"
        ) from None
    return fd, path, existed


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[str | None]:
    """Holds the run directory's lock; yields a note to log when a dead run's lock was taken over.

    Raises `RunLocked` naming the holder when another live process holds it.
    """
    fd, path, existed = _open_lock(run_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"trainer.output_dir={run_dir} is in use by {_holder(path) or 'another process'} (lock {path}); "
                "two runs must not write one directory: wait for it to end, stop it, or choose "
                "another trainer.output_dir"
            ) from None
        previous = _holder(path) if existed else ""
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        note = (
            f"took over the lock {path} left by {previous}, which is no longer running"
            if previous
            else None
        )
        try:
            yield note
        finally:
            # Emptied, not removed: removing it could let a waiting run lock a file that a third
            # run no longer sees. A leftover empty lock file is harmless.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock
