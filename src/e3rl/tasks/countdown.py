"""Countdown: reach a target from given numbers with + - * /, each number used exactly once.

Why this task: it is search. A prompt usually has a handful of solutions among hundreds of
wrong combinations, so a policy that samples widely finds them and one that has collapsed onto
a single habit does not: the regime in which the temperature controller and the rollout budget
are supposed to matter (and the task on which small models were first seen to learn reasoning by
RL, TinyZero). Difficulty grows with the number of operands and falls with the number of
solutions.

A prompt is `3,5,7>22:`; a response works one operation per step, each step consuming two
available numbers (given or produced) and producing one: `5*3=15,15+7=22`. It is right when
every step's arithmetic is exact, every given number is used exactly once and the last value is
the target. A chat model may instead answer `\\boxed{5*3+7}`: any expression over the given
numbers (each once) whose value is the target.

| level | operands | numbers |
|-------|----------|---------|
| 1     | 2        | 1-9     |
| 2     | 3        | 1-5     |
| 3     | 3        | 1-9     |
| 4     | 4        | 1-9     |
| 5     | 3        | 1-25    |

Generated problems keep every intermediate value an integer in 0..99 (division only when exact),
so the target is reachable that way; the checker accepts any exact solution.
"""

from __future__ import annotations

import ast
import itertools
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from e3rl.tasks import generation as G

VALUE_MAX = 99  # generated problems keep every intermediate value in 0..VALUE_MAX

# level -> (operands, largest number)
LEVELS: dict[int, tuple[int, int]] = {1: (2, 9), 2: (3, 5), 3: (3, 9), 4: (4, 9), 5: (3, 25)}

_OPS = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b if b else None,
}


@dataclass(frozen=True)
class Problem:
    question: str
    """Numbers and target, e.g. '3,5,7>22:'."""
    answer: str
    """What the checker needs: the numbers and the target, e.g. '3,5,7>22'."""
    solution: str
    """One solution, one operation per step, e.g. '5*3=15,15+7=22'."""
    level: int

    @property
    def direct(self) -> str:
        """Countdown has no direct answer: the steps are the answer."""
        return self.solution


def instruction(p: Problem) -> str:
    """The prompt's text for a chat model."""
    numbers, target = parse_answer(p.answer)
    listed = ", ".join(str(n) for n in numbers)
    return (
        f"Using the numbers {listed}, each exactly once, and + - * /, make {target}. "
        "Put the expression in \\boxed{}."
    )


def _step(rng: random.Random, a: int, b: int) -> tuple[str, int] | None:
    """A random valid operation on a and b (larger first for - and /), or None."""
    a, b = max(a, b), min(a, b)
    options = [("+", a + b), ("-", a - b), ("*", a * b)]
    if b > 1 and a % b == 0:
        options.append(("/", a // b))
    options = [(op, v) for op, v in options if 0 <= v <= VALUE_MAX]
    return rng.choice(options) if options else None


def make_problem(rng: random.Random, level: int) -> Problem:
    if level not in LEVELS:
        raise ValueError(f"countdown level {level} does not exist; valid levels: {sorted(LEVELS)}")
    count, top = LEVELS[level]
    while True:  # a draw can dead-end (every operation leaves 0..VALUE_MAX): draw again
        numbers = [rng.randint(1, top) for _ in range(count)]
        pool, steps = list(numbers), []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            a, b = max(pool[i], pool[j]), min(pool[i], pool[j])
            made = _step(rng, a, b)
            if made is None:
                break
            op, value = made
            pool = [x for k, x in enumerate(pool) if k not in (i, j)] + [value]
            steps.append(f"{a}{op}{b}={value}")
        if len(pool) == 1 and pool[0] > 0:
            spec = f"{','.join(map(str, numbers))}>{pool[0]}"
            return Problem(question=f"{spec}:", answer=spec, solution=",".join(steps), level=level)


def generate(
    levels: list[int], size: int, seed: int, exclude: set[str] | None = None
) -> list[Problem]:
    """`size` distinct problems spread evenly over `levels` (round robin), deterministic in seed
    (a level that runs out of distinct problems gives its share to the others)."""
    return G.generate(make_problem, "countdown", levels, size, seed, exclude)


def stream(levels: list[int], seed: int, exclude: set[str] | None = None) -> Iterator[Problem]:
    """An endless supply of problems (levels in turn), skipping the `exclude`d questions."""
    return G.stream(make_problem, levels, seed, exclude)


def splits(
    levels: list[int], train_size: int, val_size: int, seed: int
) -> dict[str, list[Problem]]:
    """Train and validation splits; validation questions never occur in training."""
    return G.splits(make_problem, "countdown", levels, train_size, val_size, seed)


# ----------------------------------------------------------------------------- checking

_SPEC = re.compile(r"^\s*(\d+(?:\s*,\s*\d+)*)\s*>\s*(-?\d+)\s*$")
# operands may be negative: a value a step produced (1-2=-1) can be used by a later one
_STEP = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def parse_answer(answer: str) -> tuple[list[int], int]:
    """('3,5,7>22') -> ([3, 5, 7], 22); a ValueError naming the string when it is not one."""
    m = _SPEC.match(str(answer))
    if not m:
        raise ValueError(f"countdown answer {answer!r} is not of the form 'N,N,...>TARGET'")
    return [int(x) for x in m.group(1).split(",")], int(m.group(2))


def check_steps(response: str, numbers: list[int], target: int) -> bool:
    """Steps 'a<op>b=c' separated by commas: exact arithmetic, each available value (given or
    produced) used once, every given number used, the last value the target."""
    pool = Counter(numbers)
    steps = [s for s in response.strip().split(",") if s.strip()]
    if not steps:
        return False
    for step in steps:
        m = _STEP.match(step)
        if not m:
            return False
        a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        if pool[a] < 1:
            return False
        pool[a] -= 1
        if pool[b] < 1:
            return False
        pool[b] -= 1
        value = _OPS[op](Fraction(a), Fraction(b))
        if value is None or value != c:
            return False
        pool[c] += 1
    return +pool == Counter([target])


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    """Value of an expression of integer literals and + - * / (exact), collecting the literals."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, used)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp):
        ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
        if type(node.op) in ops:
            value = _OPS[ops[type(node.op)]](
                _evaluate(node.left, used), _evaluate(node.right, used)
            )
            if value is None:
                raise ZeroDivisionError
            return value
    raise ValueError("not an arithmetic expression")


def check_expression(expression: str, numbers: list[int], target: int) -> bool:
    """An expression over the given numbers, each exactly once, whose exact value is the target."""
    text = expression.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    text = text.replace("×", "*").replace("÷", "/").split("=")[0]
    if len(text) > 200:
        return False
    try:
        used: list[int] = []
        value = _evaluate(ast.parse(text, mode="eval"), used)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return False
    return Counter(used) == Counter(numbers) and value == target


def score(response: str, answer: str) -> float:
    """1.0 for a correct solution (steps, or a \\boxed{} expression), else 0.0."""
    numbers, target = parse_answer(answer)
    boxed = _BOXED.findall(response)
    if boxed:
        return float(check_expression(boxed[-1], numbers, target))
    return float(check_steps(response, numbers, target))


def solutions(numbers: list[int], target: int) -> int:
    """How many distinct step sequences (up to the order of each step's operands for + and *)
    reach the target: the problem's difficulty beside its number of operands."""

    def count(pool: tuple[Fraction, ...]) -> int:
        if len(pool) == 1:
            return int(pool[0] == target)
        total = 0
        for i, j in itertools.combinations(range(len(pool)), 2):
            rest = tuple(x for k, x in enumerate(pool) if k not in (i, j))
            a, b = pool[i], pool[j]
            for value in {
                a + b,
                a * b,
                a - b,
                b - a,
                *((a / b,) if b else ()),
                *((b / a,) if a else ()),
            }:
                total += count((*rest, value))
        return total

    return count(tuple(Fraction(n) for n in numbers))
