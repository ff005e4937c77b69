"""The math-verify reward on the paper's data (../shared/data/e3): every ground truth is accepted
against itself written as `\\boxed{...}`, and perturbed answers are not.

The exhaustive check scores each distinct ground truth once (5,495 of them over the three files,
out of 12,034 rows): 31 s on one quiet thread (5.6 ms a call), under the ~60 s that would send it
to the `slow` set. `benchmarks/e3_ground_truths.py` runs the same check with math-verify alone
and writes the failures it finds (none at the time of writing).
"""

from __future__ import annotations

import random
import re

import pytest

from conftest import DATA_E3
from e3rl.rewards.checkers import math_reward

FILES = ("train_data.parquet", "valid_data.parquet", "test.json")
pytestmark = pytest.mark.skipif(not DATA_E3.is_dir(), reason=f"{DATA_E3} not present")

_INTEGER = re.compile(r"-?\d+")
_FRACTION = re.compile(r"\\[dt]?frac\{(\d+)\}\{(\d+)\}")


def boxed(answer: str) -> str:
    return f"\\boxed{{{answer}}}"


@pytest.fixture(scope="module")
def answers() -> dict[str, list[str]]:
    """The distinct ground truths of each file, sorted (a stable order for seeded samples)."""
    from e3rl.data import load_file

    return {name: sorted({p.answer for p in load_file(DATA_E3 / name)}) for name in FILES}


@pytest.fixture(scope="module")
def every(answers) -> list[str]:
    return sorted(set().union(*answers.values()))


def test_the_files_hold_the_ground_truths_we_expect(answers, every):
    assert [len(answers[f]) for f in FILES] == [4776, 386, 807]
    assert len(every) == 5495


def test_every_ground_truth_is_accepted_against_itself(every):
    rejected = [a for a in every if math_reward(boxed(a), a) != 1.0]
    assert rejected == []


def test_ground_truths_inside_a_worked_response_are_accepted(every):
    """The answer as a model writes it: a sentence, a boxed answer in inline math, a full stop."""
    sample = random.Random(1).sample(every, 150)
    rejected = [
        a
        for a in sample
        if math_reward(f"We simplify step by step. So the answer is ${boxed(a)}$.", a) != 1.0
    ]
    assert rejected == []


def test_perturbed_answers_are_scored_wrong(every):
    rng = random.Random(0)
    integers = [a for a in every if _INTEGER.fullmatch(a)]
    others = [a for a in every if not _INTEGER.fullmatch(a)]
    cases: list[tuple[str, str]] = []  # (response, ground truth)
    # An integer off by one.
    for a in rng.sample(integers, 150):
        cases.append((boxed(str(int(a) + 1)), a))
    # A fraction with its numerator off by one.
    fractions = [a for a in every if _FRACTION.fullmatch(a)]
    for a in rng.sample(fractions, min(50, len(fractions))):
        p, q = _FRACTION.fullmatch(a).groups()
        cases.append((boxed(f"\\frac{{{int(p) + 1}}}{{{q}}}"), a))
    # Another row's answer: a different integer, or an integer for a non-integer answer.
    for a in rng.sample(integers, 100):
        b = rng.choice(integers)
        while int(b) == int(a):
            b = rng.choice(integers)
        cases.append((boxed(b), a))
    for a in rng.sample(others, 100):
        b = rng.choice(integers)
        while b in a:  # '40 \text{ inches}' is 40: pick an integer the answer does not spell
            b = rng.choice(integers)
        cases.append((boxed(b), a))
    accepted = [(r, a) for r, a in cases if math_reward(r, a) != 0.0]
    assert len(cases) == 400
    assert accepted == []
