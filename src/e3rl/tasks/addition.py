"""Multi-digit addition worked column by column, with carries, at graded lengths.

Why this task: every column is the same small skill (add two digits and a carry), and a response
is right only if every column is, so accuracy on n-digit sums should be about the column
accuracy to the n-th power: sharpening the one skill would lift short sums first and long ones
later, a curve that keeps rising (issue 15's "long curve"). As measured (docs/benchmarks.md,
testbed candidate `addition`), a weakly warm-started tiny model fails long sums by losing its
place in the operands, not by column slips, and RL gains little there.

A prompt is `4837+2956=`; the worked response adds the columns from the right, writing the carry
in as `+1` where there is one, then the sum after `#`:
`7+6=13,3+5+1=9,8+9=17,4+2+1=7#7793`. The direct response is the sum alone (`#7793`). The final
answer follows the last `#` (or sits in `\\boxed{}` for chat models), as in `arith`.

Level n: two n-digit operands, 1 <= n <= 8 (no leading 0 above n = 1).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from e3rl.tasks import arith
from e3rl.tasks import generation as G

# A problem and its chat instruction are arith's: an expression, an integer answer, a worked
# solution and its direct form '#answer'.
Problem = arith.Problem
instruction = arith.instruction

LEVELS: dict[int, int] = {n: n for n in range(1, 9)}
"""level -> digits of each operand."""


def columns(a: int, b: int) -> str:
    """The worked columns of a + b, right to left: '7+6=13,3+5+1=9' for 37 + 56."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}" + ("+1" if carry else "") + f"={total}")
        carry = total // 10
    return ",".join(steps)


def _operand(rng: random.Random, digits: int) -> int:
    lo = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(lo, 10**digits - 1)


def make_problem(rng: random.Random, level: int) -> Problem:
    if level not in LEVELS:
        raise ValueError(f"addition level {level} does not exist; valid levels: {sorted(LEVELS)}")
    a, b = _operand(rng, LEVELS[level]), _operand(rng, LEVELS[level])
    return Problem(
        question=f"{a}+{b}=", answer=a + b, solution=f"{columns(a, b)}#{a + b}", level=level
    )


def stream(levels: list[int], seed: int, exclude: set[str] | None = None) -> Iterator[Problem]:
    """An endless supply of problems (levels in turn), skipping the `exclude`d questions."""
    return G.stream(make_problem, levels, seed, exclude)


def splits(
    levels: list[int], train_size: int, val_size: int, seed: int
) -> dict[str, list[Problem]]:
    """Train and validation splits; validation questions never occur in training."""
    return G.splits(make_problem, "addition", levels, train_size, val_size, seed)


# The answer is an integer after the last '#' (or in \boxed{}), exactly as arith's.
extract_answer = arith.extract_answer
score = arith.score
