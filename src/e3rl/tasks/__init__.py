"""Built-in verifiable tasks with graded difficulty (demos, tests, benchmarks)."""

from e3rl.tasks import addition, arith, countdown

TASKS = {"arith": arith, "countdown": countdown, "addition": addition}
