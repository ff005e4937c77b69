"""Runs reward functions so that a failing or hanging one is contained and counted."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from e3rl.rewards.checkers import RewardFn


class RewardTimeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float):
    """SIGALRM-based limit; only possible on the main thread (elsewhere: no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    def handler(signum, frame):
        raise RewardTimeout

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class RewardRunner:
    fn: RewardFn
    timeout: float = 5.0
    max_logged: int = 3
    """Offending samples kept per step for the log."""
    errors: int = 0
    timeouts: int = 0
    samples: list[dict] = field(default_factory=list)

    def reset_counts(self) -> None:
        self.errors = self.timeouts = 0
        self.samples = []

    def _one(self, response: str, answer: str, info: dict) -> float:
        try:
            with _time_limit(self.timeout):
                value = float(self.fn(response, answer, **info))
        except RewardTimeout:
            self.timeouts += 1
            self._keep("timeout", response, answer)
            return 0.0
        except Exception as e:  # user code: anything may go wrong, and the run must go on
            self.errors += 1
            self._keep(f"{type(e).__name__}: {e}", response, answer)
            return 0.0
        if not math.isfinite(value):
            self.errors += 1
            self._keep(f"non-finite reward {value}", response, answer)
            return 0.0
        return value

    def _keep(self, why: str, response: str, answer: str) -> None:
        if len(self.samples) < self.max_logged:
            self.samples.append({"error": why, "response": response[:200], "answer": answer})

    def __call__(
        self, responses: Sequence[str], answers: Sequence[str], infos: Sequence[dict] | None = None
    ) -> list[float]:
        infos = infos or [{}] * len(responses)
        return [self._one(r, a, i) for r, a, i in zip(responses, answers, infos, strict=True)]
