"""The training package stays readable: small modules, small functions, a short `train`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "e3rl"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_TRAIN_LINES = 500, 120, 120


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


@pytest.mark.parametrize("path", sorted((SRC / "train").glob("*.py")), ids=lambda p: p.name)
def test_modules_and_functions_of_the_train_package_are_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines"
    long = [(name, n) for name, n in _functions(path) if n > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_train_reads_top_to_bottom_in_at_most_120_lines():
    found = dict(_functions(SRC / "train" / "loop.py"))
    assert 0 < found["train"] <= MAX_TRAIN_LINES
    assert "train_step" in found


def test_the_old_module_paths_are_the_moved_modules():
    import e3rl.checkpoint
    import e3rl.killpoints
    import e3rl.train.checkpoint
    import e3rl.train.testing
    import e3rl.trainer
    from e3rl.train import loop

    assert e3rl.checkpoint is e3rl.train.checkpoint  # monkeypatching either patches both
    assert e3rl.killpoints is e3rl.train.testing
    assert e3rl.trainer.train is loop.train
