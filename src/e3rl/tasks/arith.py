"""Multi-step integer arithmetic with graded difficulty.

Why this task: the method under study pays off only when difficulty really varies inside the
data set (some prompts almost always solved, others rarely). Here difficulty is set by the number
of operations and the size of the operands, so after a short warm start a tiny model solves
level 1 almost always and the last levels rarely, and RL has room in between.

A prompt is `7+8-5=`; the worked answer evaluates left to right, one operation per step:
`7+8=15,15-5=10#10` (a single operation is answered directly: `#15`). The final answer follows
`#` (or sits in `\\boxed{}` for chat models).

| level | operands                          | operations |
|-------|-----------------------------------|------------|
| 1     | 1 digit, running value in 0..19   | 1          |
| 2     | 1 digit, running value in 0..19   | 2          |
| 3     | 1 digit, running value in 0..19   | 3          |
| 4     | 1 digit, running value in 0..19   | 4          |
| 5     | 1 digit, running value in 0..19   | 5          |
| 6     | 2 digits                          | 1          |
| 7     | 2 digits                          | 2          |
| 8     | 3 digits                          | 1          |

Multi-step problems can be answered directly (`#10`) or worked step by step. Every step of
levels 1-5 is a small fact the model knows, so the worked answer is far more often right. The
warm start shows both forms (`worked_fraction`), so the base policy sometimes works the problem
out and sometimes guesses: the first thing RL learns is to work it out. Levels 6-8 have no such
shortcut: their steps are hard in themselves.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

from e3rl.tasks import generation as G

SMALL_MAX = 19  # levels 1-5 keep every intermediate value in 0..SMALL_MAX

# level -> (digits of the first operand, digits of the others, operations, small running value)
LEVELS: dict[int, tuple[int, int, int, bool]] = {
    1: (1, 1, 1, True),
    2: (1, 1, 2, True),
    3: (1, 1, 3, True),
    4: (1, 1, 4, True),
    5: (1, 1, 5, True),
    6: (2, 2, 1, False),
    7: (2, 2, 2, False),
    8: (3, 3, 1, False),
}


@dataclass(frozen=True)
class Problem:
    question: str
    """The expression followed by '=', e.g. '37+48-5='."""
    answer: int
    solution: str
    """Worked answer, one operation per step, final answer after '#'."""
    level: int

    @property
    def direct(self) -> str:
        """The answer alone, without the worked steps."""
        return f"#{self.answer}"


def instruction(p: Problem) -> str:
    """The prompt's text for a chat model."""
    return f"Compute {p.question[:-1]}. Put the final answer in \\boxed{{}}."


def _operand(rng: random.Random, digits: int) -> int:
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(lo, 10**digits - 1)


def make_problem(rng: random.Random, level: int) -> Problem:
    if level not in LEVELS:
        raise ValueError(f"arith level {level} does not exist; valid levels: {sorted(LEVELS)}")
    first_digits, other_digits, ops, small = LEVELS[level]
    value = _operand(rng, first_digits)
    expr, steps = str(value), []
    for _ in range(ops):
        op = rng.choice("+-")
        b = _operand(rng, other_digits)
        new = value + b if op == "+" else value - b
        if small and not 0 <= new <= SMALL_MAX:  # the other operation keeps it in range
            op, new = ("-", value - b) if op == "+" else ("+", value + b)
        steps.append(f"{value}{op}{b}={new}")
        expr += f"{op}{b}"
        value = new
    # One operation needs no intermediate step: the response is the answer alone.
    solution = ("" if ops == 1 else ",".join(steps)) + f"#{value}"
    return Problem(question=f"{expr}=", answer=value, solution=solution, level=level)


def generate(
    levels: list[int], size: int, seed: int, exclude: set[str] | None = None
) -> list[Problem]:
    """`size` distinct problems spread evenly over `levels` (round robin), deterministic in seed
    (a level that runs out of distinct problems gives its share to the others)."""
    return G.generate(make_problem, "arith", levels, size, seed, exclude)


def stream(levels: list[int], seed: int, exclude: set[str] | None = None) -> Iterator[Problem]:
    """An endless supply of problems (levels in turn), skipping the `exclude`d questions."""
    return G.stream(make_problem, levels, seed, exclude)


def splits(
    levels: list[int], train_size: int, val_size: int, seed: int
) -> dict[str, list[Problem]]:
    """Train and validation splits; validation questions never occur in training."""
    return G.splits(make_problem, "arith", levels, train_size, val_size, seed)


_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_HASH = re.compile(r"#\s*(-?\d+)")


def extract_answer(text: str) -> str | None:
    """The final answer: after the last '#', else inside the last \\boxed{}, else None."""
    for pattern in (_HASH, _BOXED):
        found = pattern.findall(text)
        if found:
            return found[-1]
    return None


def score(response: str, answer: str) -> float:
    got = extract_answer(response)
    if got is None:
        return 0.0
    try:
        return 1.0 if int(got) == int(answer) else 0.0
    except ValueError:
        return 0.0
