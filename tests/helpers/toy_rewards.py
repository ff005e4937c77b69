"""Reward functions used by the tests through `reward.fn=toy_rewards:NAME`."""

import time
import zlib


def starts_with_digit(response: str, answer: str, **info) -> float:
    """An easy target for a random model: about 1 in 25 first tokens is a digit."""
    return float(bool(response) and response[0].isdigit())


def raises(response: str, answer: str, **info) -> float:
    raise RuntimeError("boom")


def sleeps(response: str, answer: str, **info) -> float:
    """Hangs (far beyond any reward.timeout a test sets)."""
    import time

    time.sleep(30)
    return 1.0


def returns_nan(response: str, answer: str, **info) -> float:
    return float("nan")


def returns_text(response: str, answer: str, **info):
    return "correct"


_signalled = False


def signals_once(response: str, answer: str, **info) -> float:
    """Sends the training process the signal named by E3RL_TEST_SIGNAL (default SIGINT), once.

    User rewards run in a worker process (see RewardRunner.isolate): its parent is the trainer.
    """
    import multiprocessing
    import os
    import signal

    global _signalled
    if not _signalled:
        _signalled = True
        parent = multiprocessing.parent_process()
        pid = parent.pid if parent is not None else os.getpid()
        os.kill(pid, getattr(signal, os.environ.get("E3RL_TEST_SIGNAL", "SIGINT")))
    return 0.0


def hangs_unless_ok(response: str, answer: str, **info) -> float:
    """'ok' scores 1; anything else hangs with SIGALRM blocked, as C code that never checks for
    signals does: only killing the process stops it."""
    import signal
    import time

    if response == "ok":
        return 1.0
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(60)
    return 1.0


def crashes_unless_ok(response: str, answer: str, **info) -> float:
    """'ok' scores 1; anything else ends the process at once (as a segfault in C code would)."""
    import os

    if response == "ok":
        return 1.0
    os._exit(3)


def by_level(response: str, answer: str, level: int = 0, **info) -> float:
    """Level 1 is always solved; other levels are a fair coin on a checksum of the response."""
    return 1.0 if level == 1 else float(zlib.crc32(response.encode()) % 2)


def one_argument(response: str) -> float:
    """The wrong signature: cannot take the answer."""
    return 0.0


def needs_unknown_info(response: str, answer: str, difficulty: int) -> float:
    """Takes (response, answer), but needs an info key no prompt has: fails on every call."""
    return 0.0


def raises_on_odd(response: str, answer: str, **info) -> float:
    """Fails on about half the calls (odd checksum), scores 1 on the others."""
    if zlib.crc32(response.encode()) % 2:
        raise RuntimeError("odd")
    return 1.0


_READY: list[bool] = []


def _slow_setup() -> None:
    """Stands in for a heavy import (math-verify's sympy): 1.5 s, once per process."""
    if not _READY:
        time.sleep(1.5)
        _READY.append(True)


def slow_first_call(response: str, answer: str, **info) -> float:
    """Pays `_slow_setup` on its first call unless it was warmed up."""
    _slow_setup()
    return 1.0


slow_first_call.warm_up = _slow_setup


def slow_first_call_cold(response: str, answer: str, **info) -> float:
    """`slow_first_call` without the warm-up hook (the control)."""
    _slow_setup()
    return 1.0
