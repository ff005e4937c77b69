"""The one testing seam: fault injection read from the environment, so that subprocess tests
(and a shell) can reach it without any library signature carrying a test-only parameter.

Kill points. `E3RL_TEST_KILL_AT=POINT:STEP` makes the process kill itself with SIGKILL (no handler, no
cleanup, as the OOM killer or a pre-empted node would) when it reaches POINT at step STEP:

- `checkpoint-written`: the checkpoint of STEP is complete in its temporary directory, not renamed;
- `checkpoint-renamed`: the checkpoint of STEP is renamed into place, older ones not yet pruned;
- `metrics-line`: half of STEP's metrics.jsonl line is written and flushed (a torn line);
- `validation`: STEP's validation has been computed, nothing of STEP is logged yet;
- `final-model`: the final model is in place, summary.json is not written (STEP = total_steps).

Unset (the normal case) it costs one dictionary lookup per point.

NaN losses. `E3RL_TEST_NAN_STEPS=2,4,5` replaces every update loss of those steps by NaN, to
test the non-finite guards (`nan_losses` does the same in-process, around one update).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Iterator

from e3rl.config import ConfigError

KILL_ENV = "E3RL_TEST_KILL_AT"
NAN_STEPS_ENV = "E3RL_TEST_NAN_STEPS"
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


# Set only inside `nan_losses`: a module flag, so that policy_update needs no test parameter.
_poison_losses = False


def nan_steps_from_env() -> set[int]:
    """The steps E3RL_TEST_NAN_STEPS lists (empty when unset); a bad value is a ConfigError."""
    raw = os.environ.get(NAN_STEPS_ENV, "")
    try:
        return {int(s) for s in raw.split(",") if s.strip()}
    except ValueError:
        raise ConfigError(
            f"{NAN_STEPS_ENV}={raw!r} is invalid: expected comma-separated step numbers"
        ) from None


def check_env() -> None:
    """Raises ConfigError at the start of a run if a hook's variable is malformed."""
    nan_steps_from_env()
    armed(POINTS[0], -1)


@contextlib.contextmanager
def nan_losses(active: bool = True) -> Iterator[None]:
    """Inside, every update loss is NaN (when `active`)."""
    global _poison_losses
    before, _poison_losses = _poison_losses, active or _poison_losses
    try:
        yield
    finally:
        _poison_losses = before


def nan_step(step: int) -> contextlib.AbstractContextManager[None]:
    """`nan_losses` for the steps E3RL_TEST_NAN_STEPS lists, a no-op for the others."""
    return nan_losses(step in nan_steps_from_env())


def poisoned(loss):
    """`loss`, or NaN in its place inside `nan_losses`."""
    return loss * math.nan if _poison_losses else loss
