"""Guards of the training loop: graceful stop on SIGINT/SIGTERM, and the non-finite update streak."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e3rl.train import checkpoint as ckpt

EXPECTED_REWARD_SIGNATURE = "fn(response: str, answer: str, **info) -> float"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. trainer.max_bad_steps skipped updates in a row)."""


class StopOnSignal:
    """SIGINT/SIGTERM ask for a graceful stop: the loop finishes its step, checkpoints and returns.

    A second signal aborts at once (KeyboardInterrupt). The previous handlers come back on exit.
    Handlers can only be set on the main thread; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name


@dataclass
class BadSteps:
    """Counts steps in a row whose update was skipped (a non-finite loss or gradient)."""

    limit: int
    streak: int = 0
    first: int = 0  # first step of the current streak

    def record(self, step: int, skipped_updates: int) -> bool:
        """Whether `step` was bad; a good step resets the streak."""
        if not skipped_updates:
            self.streak = 0
            return False
        self.first = step if self.streak == 0 else self.first
        self.streak += 1
        return True

    @property
    def exhausted(self) -> bool:
        return self.streak >= self.limit


def report_bad_step(bad: BadSteps, step: int, saved_at: int | None, run_dir: Path, log) -> None:
    """Logs a skipped update; at trainer.max_bad_steps in a row, stops the run (TrainingError)."""
    log.info(
        f"step {step}: update skipped, non-finite loss or gradient "
        f"({bad.streak} in a row, trainer.max_bad_steps={bad.limit}); no checkpoint at this step"
    )
    if not bad.exhausted:
        return
    if saved_at is None:
        where = "no checkpoint was written before the problem"
    else:
        where = (
            f"the newest checkpoint, {run_dir / ckpt.CKPT_DIR / f'step-{saved_at:06d}'}, "
            f"is from step {saved_at}, before the problem"
        )
    raise TrainingError(
        f"steps {bad.first}-{step}: {bad.streak} updates in a row had a non-finite loss or "
        f"gradient (trainer.max_bad_steps={bad.limit}); {where}. Lower optim.lr or check the "
        "rewards, then resume with --resume (--resume-force if the config changed)"
    )


def stop_message(signame: str, step: int, saved_at: int | None) -> str:
    if saved_at == step:
        return f"{signame}: stopped at step {step}; resume with --resume"
    if saved_at is None:  # only when every step so far was skipped as non-finite
        return f"{signame}: stopped at step {step}; no checkpoint yet, so a new run starts over"
    return (
        f"{signame}: stopped at step {step}, whose update was skipped (non-finite), so the "
        f"newest checkpoint is from step {saved_at}; resume with --resume"
    )


def check_rewards_scored(
    reward, calls: int, step: int, fn_name: str, saved_at: int | None, run_dir: Path
) -> None:
    """Stops the run (TrainingError) when every reward call of `step` raised or timed out.

    Such a step has no signal to learn from, and the usual cause (a function that cannot work,
    e.g. the wrong signature) fails every later step the same way; a partial failure is counted
    and logged, and the run goes on.
    """
    if calls == 0 or reward.errors + reward.timeouts < calls:
        return
    why = reward.samples[0]["error"] if reward.samples else "unknown"
    where = (
        f"the newest checkpoint is {run_dir / ckpt.CKPT_DIR / f'step-{saved_at:06d}'}"
        if saved_at is not None
        else "no checkpoint was written"
    )
    raise TrainingError(
        f"step {step}: all {calls} calls of reward.fn={fn_name!r} failed "
        f"({reward.errors} raised, {reward.timeouts} timed out), e.g. {why}; a reward function "
        f"must be {EXPECTED_REWARD_SIGNATURE} and finish within reward.timeout. Nothing of "
        f"step {step} was trained or logged; {where}"
    )
