"""Countdown: generated problems are solvable by their own solution, and the checker accepts
exactly the correct solutions (hand-written cases, and a brute-force solver as independent truth)."""

import itertools
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3rl.config import ConfigError, TaskConfig
from e3rl.data import task_prompts
from e3rl.rewards.checkers import resolve_reward
from e3rl.tasks import countdown as C


@pytest.mark.parametrize(
    "response, ok",
    [
        ("5*3=15,15+7=22", True),
        ("3*5=15,7+15=22", True),  # operand order is free for + and *
        ("5*3=15,15+7=22,", True),  # a trailing comma is harmless
        (" 5 * 3 = 15 , 15 + 7 = 22 ", True),
        ("5*3=15", False),  # 7 unused
        ("5*3=15,15+7=22,22-0=22", False),  # 0 was never available
        ("5*3=16,16+7=23", False),  # wrong arithmetic
        ("5*5=25,25-3=22", False),  # 5 used twice, 7 unused
        ("7+5=12,12+3=15", False),  # exact but not the target
        ("15+7=22", False),  # 15 not available yet
        ("", False),
        ("#22", False),
        ("\\boxed{5*3+7}", True),
        ("\\boxed{(7+5*3)}", True),
        ("\\boxed{5 \\times 3 + 7 = 22}", True),
        ("\\boxed{5*3+7+0}", False),  # 0 is not a given number
        ("\\boxed{5*5-3}", False),
        ("\\boxed{22}", False),
        ("\\boxed{5**3}", False),  # only + - * /
        ("\\boxed{__import__('os')}", False),
    ],
)
def test_checker_on_hand_written_responses(response, ok):
    assert C.score(response, "3,5,7>22") == float(ok)


def test_division_must_be_exact_in_steps_but_expressions_use_fractions():
    assert C.score("8/3=2,2*3=6", "8,3,3>6") == 0.0  # 8/3 is not 2
    # (8/3)*3 = 8 exactly: an expression is evaluated in fractions
    assert C.score("\\boxed{8/3*3}", "8,3,3>8") == 1.0
    assert C.score("6/0=0,0+1=1", "6,0,1>1") == 0.0


def test_a_malformed_answer_names_itself():
    with pytest.raises(ValueError, match="'22' is not of the form"):
        C.score("5*3=15", "22")


@pytest.mark.parametrize("level", sorted(C.LEVELS))
def test_every_generated_problem_is_solved_by_its_solution(level):
    rng = random.Random(level)
    operands, top = C.LEVELS[level]
    for _ in range(300):
        p = C.make_problem(rng, level)
        numbers, target = C.parse_answer(p.answer)
        assert len(numbers) == operands and all(1 <= n <= top for n in numbers)
        assert p.question == p.answer + ":"
        assert C.score(p.solution, p.answer) == 1.0
        assert len(p.solution.split(",")) == operands - 1


def _reachable(numbers: list[int], target: int) -> bool:
    """Brute force over every pair and operation, independent of the checker's code."""
    if len(numbers) == 1:
        return numbers[0] == target
    for i, j in itertools.permutations(range(len(numbers)), 2):
        rest = [x for k, x in enumerate(numbers) if k not in (i, j)]
        a, b = numbers[i], numbers[j]
        for v in (a + b, a - b, a * b, a / b if b else None):
            if v is not None and _reachable([*rest, v], target):
                return True
    return False


@settings(max_examples=150, deadline=None)
@given(
    numbers=st.lists(st.integers(1, 9), min_size=2, max_size=3),
    target=st.integers(-5, 40),
    ops=st.lists(st.sampled_from("+-*/"), min_size=2, max_size=2),
)
def test_a_step_sequence_passes_only_if_it_is_a_real_solution(numbers, target, ops):
    # a left-to-right sequence built from the numbers: the checker must agree with exact arithmetic
    steps, value = [], numbers[0]
    for op, b in zip(ops, numbers[1:], strict=False):
        new = {"+": value + b, "-": value - b, "*": value * b, "/": Fraction(value, b)}[op]
        if new != int(new):
            return  # steps carry integers only
        steps.append(f"{value}{op}{b}={int(new)}")
        value = int(new)
    spec = f"{','.join(map(str, numbers))}>{target}"
    assert C.score(",".join(steps), spec) == float(value == target)
    if value == target:
        assert _reachable([Fraction(n) for n in numbers], target)


@pytest.mark.parametrize(
    "numbers, target, expected", [([3, 5], 8, 1), ([3, 5], 15, 1), ([2, 2], 4, 1), ([3, 5], 7, 0)]
)
def test_solution_count_by_hand(numbers, target, expected):
    # 3+5=8 (3*5=15) once each; 2+2 and 2*2 are both 4 but give one value: counted once
    assert C.solutions(numbers, target) == expected


def test_splits_are_disjoint_deterministic_and_spread_over_levels():
    a = C.splits([1, 2, 3, 4], 800, 200, seed=7)
    b = C.splits([1, 2, 3, 4], 800, 200, seed=7)
    assert [p.question for p in a["train"]] == [p.question for p in b["train"]]
    assert not {p.question for p in a["train"]} & {p.question for p in a["val"]}
    assert {p.level for p in a["val"]} == {1, 2, 3, 4}


def test_a_config_with_levels_the_task_lacks_is_refused():
    with pytest.raises(ConfigError, match=r"levels=\[1, 6\].*subset of \[1, 2, 3, 4, 5\]"):
        TaskConfig(name="countdown", levels=[1, 6])


def test_task_prompts_carry_a_checkable_answer_and_auto_picks_the_checker():
    task = TaskConfig(name="countdown", levels=[1, 2], train_size=20, val_size=10)
    prompts = task_prompts(task, "val")
    reward = resolve_reward("auto", "countdown")
    for p in prompts:
        assert "each exactly once" in p.messages[0]["content"]
        assert reward(p.meta["solution"], p.answer) == 1.0
        assert p.text.endswith(":")


def test_a_negative_value_produced_by_a_step_can_be_used_again():
    # found by the property test above: 1-2 = -1 is a value like any other
    assert C.score("1-2=-1,-1+1=0", "1,2,1>0") == 1.0
    assert C.score("1-2=-1,-1+2=1", "1,2,1>0") == 0.0  # 2 was already used
