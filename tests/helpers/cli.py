"""Running the real entry point in a subprocess, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m e3rl.cli ARGS...` with unbuffered output; stdout and stderr captured as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "e3rl.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )
