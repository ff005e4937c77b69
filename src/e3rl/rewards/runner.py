"""Runs reward functions so that a failing or hanging one is contained and counted.

A call over `timeout` seconds is stopped by SIGALRM, which raises `RewardTimeout`, a
BaseException so that the `except Exception` of library code (math-verify has many) cannot
swallow it. A signal cannot stop C code that never checks for one (e.g. sympy on gmpy2 raising
`9^{9^{9^9}}`), so math-verify and user functions run in a worker process (`isolate=True`): a
call that overruns the timeout by `HARD_GRACE` seconds gets the worker killed and restarted, and
scores 0 like any timeout; a worker that crashes is restarted too.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import pickle
import signal
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from e3rl.rewards.checkers import RewardFn

HARD_GRACE = 1.0
"""Seconds past the timeout after which an isolated call's worker is killed."""
STARTUP_TIMEOUT = 120.0
"""Seconds a new worker process may take to start (imports the reward function's module)."""


class RewardTimeout(BaseException):
    """Not an Exception: reward code's `except Exception` must not swallow the time limit."""


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


def _call(fn: RewardFn, response: str, answer: str, info: dict, timeout: float):
    """('ok', value) | ('timeout', None) | ('error', 'Type: message'), never raises (but ^C)."""
    try:
        with _time_limit(timeout):
            return "ok", float(fn(response, answer, **info))
    except RewardTimeout:
        return "timeout", None
    except Exception as e:  # user code: anything may go wrong, and the run must go on
        return "error", f"{type(e).__name__}: {e}"


def needs_isolation(fn: RewardFn) -> bool:
    """math-verify and user functions may hang in C code; the built-in string checkers cannot."""
    from e3rl.rewards import checkers as C

    builtin = (C.arith_reward, C.countdown_reward, C.addition_reward, C.exact_reward)
    return fn not in (*builtin, C.numeric_reward)


@dataclass
class RewardRunner:
    fn: RewardFn
    timeout: float = 5.0
    max_logged: int = 3
    """Offending samples kept per step for the log."""
    isolate: bool = False
    """Score in a worker process that is killed when a call hangs (see the module docstring)."""
    errors: int = 0
    timeouts: int = 0
    samples: list[dict] = field(default_factory=list)
    _worker: _Worker | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.isolate:
            try:
                pickle.dumps(self.fn)
            except Exception as e:
                raise ValueError(
                    f"reward function {self.fn!r} cannot run in a worker process: it must be a "
                    f"module-level function ({e})"
                ) from None

    def reset_counts(self) -> None:
        self.errors = self.timeouts = 0
        self.samples = []

    def _settle(self, outcome: tuple[str, Any], response: str, answer: str) -> float:
        kind, value = outcome
        if kind == "timeout":
            self.timeouts += 1
            self._keep("timeout", response, answer)
            return 0.0
        if kind == "error":
            self.errors += 1
            self._keep(value, response, answer)
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
        items = list(zip(responses, answers, infos, strict=True))
        if self.isolate:
            outcomes = self._isolated(items)
        else:
            outcomes = [_call(self.fn, r, a, i, self.timeout) for r, a, i in items]
        return [self._settle(o, r, a) for o, (r, a, _) in zip(outcomes, items, strict=True)]

    def _isolated(self, items: list[tuple]) -> list[tuple[str, Any]]:
        """Outcomes from the worker; a call with no answer in time kills it (the rest go on)."""
        outcomes: list[tuple[str, Any]] = []
        while len(outcomes) < len(items):
            if self._worker is None:
                self._worker = _Worker(self.fn, self.timeout)
            worker = self._worker
            worker.conn.send(items[len(outcomes) :])
            while len(outcomes) < len(items):
                outcome = worker.receive(self.timeout + HARD_GRACE)
                outcomes.append(outcome or ("timeout", None))
                if outcome is None or worker.dead:  # hung or crashed: a new worker goes on
                    self.close()
                    break
        return outcomes

    def close(self) -> None:
        """Stops the worker process, if any (a later call starts a new one)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit, anything may be gone
            self.close()


class _Worker:
    """A spawned process that scores batches and answers call by call over a pipe."""

    def __init__(self, fn: RewardFn, timeout: float) -> None:
        ctx = mp.get_context("spawn")  # no fork: the parent holds torch's threads
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child, fn, timeout), daemon=True, name="e3rl-reward"
        )
        self.process.start()
        child.close()
        self.dead = False
        if self.receive(STARTUP_TIMEOUT) != ("ready", None):
            self.stop()
            raise RuntimeError(f"the reward worker process did not start ({fn!r})")

    def receive(self, timeout: float) -> tuple[str, Any] | None:
        """The next message; None if none came in time; an 'error' if the worker died."""
        try:
            if not self.conn.poll(timeout):
                return None
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1.0)
            self.dead = True
            return "error", f"the reward worker process died (exit code {self.process.exitcode})"

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.process.close()
        self.conn.close()


def _worker_main(conn, fn: RewardFn, timeout: float) -> None:
    import logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C is for the trainer, which stops gracefully
    _die_with_parent()
    # math-verify warns that its own timeouts are off: they are, on purpose (we time the call).
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    warm_up = getattr(fn, "warm_up", None)
    if callable(warm_up):  # within STARTUP_TIMEOUT, not the per-call limit
        with contextlib.suppress(Exception):
            warm_up()
    conn.send(("ready", None))
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        for response, answer, info in batch:
            conn.send(_call(fn, response, answer, info, timeout))


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (a hung call would outlive a crash)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
