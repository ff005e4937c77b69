"""Splits and streams of distinct problems, shared by the built-in tasks.

A task module supplies `make_problem(rng, level)` (a problem with a `question`); these functions
turn it into deterministic train/validation splits and the warm start's endless stream. The order
of random draws is part of the contract: the shipped demo base was trained on this stream.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

MakeProblem = Callable[[random.Random, int], Any]


def generate(
    make_problem: MakeProblem,
    task: str,
    levels: list[int],
    size: int,
    seed: int,
    exclude: set[str] | None = None,
) -> list:
    """`size` distinct problems spread evenly over `levels` (round robin), deterministic in seed.

    A level that runs out of distinct problems (hundreds of draws in a row found nothing new)
    drops out; its share goes to the other levels.
    """
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list = []
    active = list(levels)
    misses = dict.fromkeys(levels, 0)
    turn = 0
    while len(out) < size:
        if not active:
            raise ValueError(
                f"could not generate {size} distinct {task} problems at levels {levels}: "
                "lower the size or add levels"
            )
        level = active[turn % len(active)]
        p = make_problem(rng, level)
        if p.question in seen:
            misses[level] += 1
            if misses[level] > 200:
                active.remove(level)
            continue
        misses[level] = 0
        turn += 1
        seen.add(p.question)
        out.append(p)
    return out


def stream(
    make_problem: MakeProblem, levels: list[int], seed: int, exclude: set[str] | None = None
) -> Iterator:
    """An endless supply of problems (levels in turn), skipping the `exclude`d questions."""
    rng = random.Random(seed)
    for i in itertools.count():
        p = make_problem(rng, levels[i % len(levels)])
        if not exclude or p.question not in exclude:
            yield p


def splits(
    make_problem: MakeProblem,
    task: str,
    levels: list[int],
    train_size: int,
    val_size: int,
    seed: int,
) -> dict[str, list]:
    """Train and validation splits; validation questions never occur in training."""
    val = generate(make_problem, task, levels, val_size, seed=seed * 2 + 1)
    held_out = {p.question for p in val}
    train = generate(make_problem, task, levels, train_size, seed=seed * 2, exclude=held_out)
    return {"train": train, "val": val}
