"""RewardRunner's worker: a checker's one-time setup is paid before the first timed call."""

from __future__ import annotations

from e3rl.rewards import RewardRunner, resolve_reward


def test_warm_up_runs_before_the_first_timed_call():
    fn = resolve_reward("toy_rewards:slow_first_call")
    runner = RewardRunner(fn, timeout=0.5, isolate=True)
    try:
        assert runner(["a", "b"], ["1", "1"], [{}, {}]) == [1.0, 1.0]
        assert runner.timeouts == 0
    finally:
        runner.close()


def test_without_warm_up_the_setup_counts_against_the_limit():
    """The control: the same checker, its hook removed, times out on its first call."""
    cold = resolve_reward("toy_rewards:slow_first_call_cold")
    runner = RewardRunner(cold, timeout=0.5, isolate=True)
    try:
        runner(["a"], ["1"], [{}])
        assert runner.timeouts == 1
    finally:
        runner.close()


def test_math_reward_has_a_warm_up():
    fn = resolve_reward("math")
    assert callable(fn.warm_up)
    fn.warm_up()  # imports math-verify and parses once; must not raise
