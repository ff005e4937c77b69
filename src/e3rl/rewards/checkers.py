"""Answer checkers. Each takes the response text and the reference answer and returns a reward."""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable

from e3rl.tasks import addition, arith, countdown

RewardFn = Callable[..., float]

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, braces balanced; None if there is none."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i = starts[-1]
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def final_answer(text: str) -> str | None:
    """\\boxed{} content, else what follows the last '#', else the last number in the text."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "#" in text:
        tail = text.rsplit("#", 1)[1].strip()
        if tail:
            return tail.split()[0]
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def exact_reward(response: str, answer: str, **_: object) -> float:
    """1 if the final answer equals the reference after whitespace normalisation."""
    got = final_answer(response)
    return float(got is not None and " ".join(got.split()) == " ".join(str(answer).split()))


def _to_float(text: str) -> float | None:
    try:
        return float(text.replace(",", "").strip())
    except ValueError:
        return None


def numeric_reward(response: str, answer: str, **_: object) -> float:
    """1 if the final answer is a number within 1e-6 (relative) of the reference number."""
    got = final_answer(response)
    a, b = (_to_float(got) if got else None), _to_float(str(answer))
    if a is None or b is None:
        return 0.0
    return float(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9))


def math_reward(response: str, answer: str, **_: object) -> float:
    """math-verify: symbolic equivalence of the last boxed/LaTeX answer with the reference.

    Its own signal-based timeouts are disabled: `RewardRunner` times the whole call instead.
    """
    from math_verify import parse, verify

    gold = parse(f"\\boxed{{{answer}}}", parsing_timeout=None)
    if not gold:
        gold = parse(str(answer), parsing_timeout=None)
    pred = parse(response, parsing_timeout=None)
    if not gold or not pred:
        return 0.0
    return float(verify(gold, pred, timeout_seconds=None))


def _warm_up_math() -> None:
    """Imports math-verify and builds its parsers once, so that the first timed call does not pay
    for them (seconds under load: enough to time out the first calls of a run)."""
    from math_verify import parse, verify

    verify(parse("\\boxed{1}", parsing_timeout=None), parse("1", parsing_timeout=None))


# RewardRunner's worker calls a checker's `warm_up` before its first timed call.
math_reward.warm_up = _warm_up_math  # type: ignore[attr-defined]


def arith_reward(response: str, answer: str, **_: object) -> float:
    return arith.score(response, answer)


def countdown_reward(response: str, answer: str, **_: object) -> float:
    return countdown.score(response, answer)


def addition_reward(response: str, answer: str, **_: object) -> float:
    return addition.score(response, answer)


REWARDS: dict[str, RewardFn] = {
    "exact": exact_reward,
    "numeric": numeric_reward,
    "math": math_reward,
    "arith": arith_reward,
    "countdown": countdown_reward,
    "addition": addition_reward,
}


def resolve_reward(name: str, task: str | None = None) -> RewardFn:
    """'auto' -> the task's checker (or math-verify for files); a registry name; or module:function."""
    if name == "auto":
        return REWARDS.get(task, math_reward) if task else math_reward
    if name in REWARDS:
        return REWARDS[name]
    if ":" not in name:
        raise ValueError(
            f"reward.fn={name!r} is invalid: expected 'auto', one of {sorted(REWARDS)}, "
            "or 'module:function'"
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any import-time failure of user code is a config error
        raise ValueError(f"reward.fn={name!r}: cannot import module {module_name!r}: {e}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"reward.fn={name!r}: module {module_name!r} has no function {attr!r}")
    _check_signature(name, fn)
    return fn


def _check_signature(name: str, fn) -> None:
    """A function that cannot take (response, answer) would fail on every call: say so now.

    Only what is certain is checked: required parameters past the first two may be filled by a
    prompt's info (e.g. `level`); whether they are is seen on the first step.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: nothing to check
        return
    try:
        sig.bind_partial("response", "answer")
    except TypeError as e:
        raise ValueError(
            f"reward.fn={name!r}: {getattr(fn, '__name__', fn)}{sig} cannot be called as "
            f"fn(response: str, answer: str, **info) -> float ({e})"
        ) from None
