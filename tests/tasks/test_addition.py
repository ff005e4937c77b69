"""Addition: the worked columns are the schoolbook algorithm (checked against Python's integer sum
over random operands), generated problems are solved by their own solution, and the checker
accepts exactly the right sum."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e3rl.config import ConfigError, TaskConfig
from e3rl.data import task_prompts
from e3rl.rewards.checkers import resolve_reward
from e3rl.tasks import addition as A


def test_columns_by_hand():
    assert A.columns(37, 56) == "7+6=13,3+5+1=9"
    assert A.columns(4837, 2956) == "7+6=13,3+5+1=9,8+9=17,4+2+1=7"
    assert A.columns(5, 7) == "5+7=12"
    assert A.columns(99, 1) == "9+1=10,9+0+1=10"  # a shorter operand reads as leading zeros


@given(st.integers(0, 10**8 - 1), st.integers(0, 10**8 - 1))
def test_columns_add_up_to_the_sum(a, b):
    """Reading the columns back (each step's units digit, right to left, and the last carry)
    gives a + b: the worked answer is a correct derivation, not only a correct final line."""
    digits, carry = [], 0
    for step in A.columns(a, b).split(","):
        lhs, total = step.split("=")
        terms = [int(t) for t in lhs.split("+")]
        assert sum(terms) == int(total)
        # the carry is written in exactly when there is one
        assert (len(terms) == 3) == (carry == 1)
        digits.append(int(total) % 10)
        carry = int(total) // 10
    written = ("1" if carry else "") + "".join(str(d) for d in reversed(digits))
    assert int(written) == a + b


@pytest.mark.parametrize("level", sorted(A.LEVELS))
def test_every_generated_problem_is_solved_by_its_solution(level):
    rng = random.Random(level)
    for _ in range(200):
        p = A.make_problem(rng, level)
        a, b = (int(x) for x in p.question[:-1].split("+"))
        assert len(str(a)) == len(str(b)) == level
        assert p.answer == a + b
        assert A.score(p.solution, str(p.answer)) == 1.0
        assert A.score(p.direct, str(p.answer)) == 1.0
        assert A.score(f"#{p.answer + 1}", str(p.answer)) == 0.0


@pytest.mark.parametrize(
    "response, ok",
    [
        ("7+6=13,3+5+1=9#93", True),
        ("#93", True),
        ("\\boxed{93}", True),
        ("7+6=13,3+5+1=9#94", False),
        ("7+6=13,3+5+1=9", False),  # no final answer
        ("#9#93", True),  # the last '#' counts
        ("", False),
    ],
)
def test_checker_on_hand_written_responses(response, ok):
    assert A.score(response, "93") == float(ok)


def test_the_task_plugs_into_config_data_and_rewards():
    task = TaskConfig(name="addition", levels=[1, 4, 8], train_size=30, val_size=9)
    train, val = task_prompts(task, "train"), task_prompts(task, "val")
    assert {p.text for p in train}.isdisjoint(p.text for p in val)
    assert sorted({p.meta["level"] for p in val}) == [1, 4, 8]
    reward = resolve_reward("auto", "addition")
    assert all(reward(p.meta["solution"], p.answer) == 1.0 for p in train)
    with pytest.raises(ConfigError, match=r"levels.*subset of \[1, 2, 3, 4, 5, 6, 7, 8\]"):
        TaskConfig(name="addition", levels=[9])
