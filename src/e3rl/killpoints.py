"""Test hook: SIGKILL this process at a named point of the run, to test exact resume.

`E3RL_TEST_KILL_AT=POINT:STEP` makes the process kill itself with SIGKILL (no handler, no
cleanup, as the OOM killer or a pre-empted node would) when it reaches POINT at step STEP:

- `checkpoint-written`: the checkpoint of STEP is complete in its temporary directory, not renamed;
- `checkpoint-renamed`: the checkpoint of STEP is renamed into place, older ones not yet pruned;
- `metrics-line`: half of STEP's metrics.jsonl line is written and flushed (a torn line);
- `validation`: STEP's validation has been computed, nothing of STEP is logged yet;
- `final-model`: the final model is in place, summary.json is not written (STEP = total_steps).

Unset (the normal case) it costs one dictionary lookup per point.
"""

from __future__ import annotations

import os
import signal

from e3rl.config import ConfigError

KILL_ENV = "E3RL_TEST_KILL_AT"
POINTS = ("checkpoint-written", "checkpoint-renamed", "metrics-line", "validation", "final-model")


def armed(point: str, step: int) -> bool:
    """Whether E3RL_TEST_KILL_AT asks for a kill at `point` of `step`."""
    raw = os.environ.get(KILL_ENV)
    if not raw:
        return False
    name, _, at = raw.rpartition(":")
    if name not in POINTS or not at.isdigit():
        raise ConfigError(
            f"{KILL_ENV}={raw!r} is invalid: expected POINT:STEP with POINT one of {POINTS}"
        )
    return name == point and int(at) == step


def kill_point(point: str, step: int) -> None:
    """SIGKILLs this process if E3RL_TEST_KILL_AT names `point` at `step`."""
    if armed(point, step):
        os.kill(os.getpid(), signal.SIGKILL)
