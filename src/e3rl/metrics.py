"""Evaluation and per-step statistics: pure functions on plain numbers, no model code.

Everything here takes lists (or arrays) of rewards, counts and answers so that the trainer, the
evaluator, the benchmarks and the report can share one definition of each number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = [
    "default_ks",
    "distinct_answers",
    "group_outcome_fractions",
    "mean_at_n",
    "normalize_answer",
    "pass_at_k",
    "pass_at_k_curve",
    "summarize_by",
]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)``.

    ``n`` samples were drawn for a prompt and ``c`` of them are correct; the result is the
    probability that a random size-``k`` subset of those samples holds at least one correct one.
    The ratio of binomials is computed as ``prod_{i=n-c+1}^{n} (1 - k/i)`` because the binomials
    themselves overflow floats for ``n`` in the hundreds.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"pass_at_k: {name} must be an int, got {value!r}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1 (got n={n}, c={c}, k={k})")
    if c < 0 or c > n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n (got n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(
            f"pass_at_k: k must not exceed the number of samples n (got n={n}, c={c}, k={k})"
        )
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    # Each factor lies in (0, 1), so the product cannot overflow; clamp away rounding noise.
    ratio = float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))
    return min(1.0, max(0.0, 1.0 - ratio))


def pass_at_k_curve(
    correct_counts: Sequence[tuple[int, int]], ks: Iterable[int]
) -> dict[int, float]:
    """Mean pass@k over prompts, for each ``k`` in ``ks``.

    ``correct_counts`` holds one ``(n, c)`` pair per prompt; prompts may have different ``n``.
    Every ``k`` must satisfy ``k <= min(n)``: silently skipping or clipping prompts with fewer
    samples would average pass@k over a different set of prompts for each ``k`` and make the curve
    non-comparable across ``k``, so it is an error instead.
    """
    if len(correct_counts) == 0:
        raise ValueError("pass_at_k_curve: correct_counts is empty (no prompts)")
    min_n = min(n for n, _ in correct_counts)
    curve: dict[int, float] = {}
    for k in sorted(set(ks)):
        if k > min_n:
            raise ValueError(
                f"pass_at_k_curve: k={k} exceeds the smallest number of samples per prompt "
                f"(min n={min_n}); only k <= {min_n} can be estimated for every prompt"
            )
        curve[k] = float(np.mean([pass_at_k(n, c, k) for n, c in correct_counts]))
    return curve


def default_ks(n: int) -> list[int]:
    """The ``k`` values worth plotting for ``n`` samples: powers of two up to ``n``, plus ``n``."""
    if n < 1:
        raise ValueError(f"default_ks: n must be >= 1, got {n}")
    ks = [2**i for i in range(n.bit_length()) if 2**i <= n]
    return ks if ks[-1] == n else [*ks, n]


def mean_at_n(rewards_per_prompt: Sequence[Sequence[float]]) -> float:
    """mean@n: the mean reward of the ``n`` samples of each prompt, averaged over prompts.

    Prompts are weighted equally even when their ``n`` differ, so that a prompt that happened to
    receive more samples does not count for more.
    """
    if len(rewards_per_prompt) == 0:
        raise ValueError("mean_at_n: no prompts")
    means = []
    for i, rewards in enumerate(rewards_per_prompt):
        values = np.asarray(rewards, dtype=np.float64)
        if values.size == 0:
            raise ValueError(f"mean_at_n: prompt {i} has no samples")
        means.append(values.mean())
    return float(np.mean(means))


_BOXED = re.compile(r"^\\boxed\{(.*)\}$")
_TEXT = re.compile(r"^\\text\{(.*)\}$")


def normalize_answer(answer: str | None) -> str | None:
    """A canonical form of a final answer, so that trivially different spellings count once.

    Removes whitespace, case, surrounding ``$``, a wrapping ``\\boxed{}``/``\\text{}`` and a
    trailing period; numbers that parse exactly (``2``, ``2.0``, ``4/2``, ``2e0``) map to one
    fraction string. This is deliberately cheap: it is a diversity statistic, not a grader.
    Returns None for a missing or empty answer.
    """
    if answer is None:
        return None
    text = "".join(str(answer).split()).lower().rstrip(".")
    text = text.strip("$")
    for pattern in (_BOXED, _TEXT):
        match = pattern.match(text)
        if match:
            text = match.group(1)
    if not text:
        return None
    try:
        return str(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return text


def distinct_answers(answers: Sequence[Sequence[str | None]]) -> float:
    """Mean number of distinct normalised final answers per prompt.

    A diversity measure of the sampled answers: a collapsed policy gives the same answer to every
    sample. ``None`` (no answer extracted) is not an answer and is not counted; a prompt with no
    answers at all counts as 0.
    """
    if len(answers) == 0:
        raise ValueError("distinct_answers: no prompts")
    counts = []
    for per_prompt in answers:
        normalised = {normalize_answer(a) for a in per_prompt}
        normalised.discard(None)
        counts.append(len(normalised))
    return float(np.mean(counts))


def group_outcome_fractions(
    rewards: Sequence[float] | np.ndarray,
    group_ids: Sequence[Hashable],
    success_threshold: float = 1.0,
) -> dict[str, float]:
    """Fractions of groups (one group = the rollouts of one prompt) by outcome.

    All-correct and all-wrong groups give zero GRPO advantage, so these fractions say how much of
    the rollout budget was spent without a learning signal. A rollout is correct when its reward is
    ``>= success_threshold``. Fractions are over groups, not rollouts, and groups may have
    different sizes; a single-rollout group is all-correct or all-wrong, never mixed. The
    ``frac_rollouts_*`` entries weight each group by its size: the share of rollouts spent in
    groups of each outcome (what an allocator that skips or shrinks groups changes).
    Pass correctness (0/1) or raw rewards here, not length-biased ones: a biased correct reward
    is below 1 and would count as wrong at the default threshold.
    """
    if hasattr(rewards, "detach"):  # a torch tensor, possibly on an accelerator
        rewards = rewards.detach().cpu()
    values = np.asarray(rewards, dtype=np.float64).reshape(-1)
    # Elements of a tensor/array hash by identity, not value: compare plain Python values.
    ids = group_ids.tolist() if hasattr(group_ids, "tolist") else list(group_ids)
    if len(values) != len(ids):
        raise ValueError(f"group_outcome_fractions: {len(values)} rewards but {len(ids)} group ids")
    if len(values) == 0:
        raise ValueError("group_outcome_fractions: no rollouts")
    correct_by_group: dict[Hashable, list[bool]] = {}
    for reward, gid in zip(values, ids, strict=True):
        correct_by_group.setdefault(gid, []).append(bool(reward >= success_threshold))
    groups = correct_by_group.values()
    n_groups, n_rollouts = len(groups), len(values)
    n_all_correct = sum(all(flags) for flags in groups)
    n_all_wrong = sum(not any(flags) for flags in groups)
    r_all_correct = sum(len(flags) for flags in groups if all(flags))
    r_all_wrong = sum(len(flags) for flags in groups if not any(flags))
    return {
        "frac_all_correct": n_all_correct / n_groups,
        "frac_all_wrong": n_all_wrong / n_groups,
        "frac_mixed": (n_groups - n_all_correct - n_all_wrong) / n_groups,
        # Weighted by rollouts: the share of the step's budget with and without a signal.
        "frac_rollouts_all_correct": r_all_correct / n_rollouts,
        "frac_rollouts_all_wrong": r_all_wrong / n_rollouts,
        "frac_rollouts_mixed": (n_rollouts - r_all_correct - r_all_wrong) / n_rollouts,
    }


def _is_number(value: Any) -> bool:
    if not isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return False
    return not math.isnan(float(value))


def _group_order(group: Any) -> tuple:
    """Numbers first in numeric order (level 2 before level 10), then strings, None last."""
    if group is None:
        return (2, 0, "")
    if _is_number(group):
        return (0, float(group), "")
    return (1, 0, str(group))


def summarize_by(values: Sequence[Mapping[str, Any]], key: str) -> dict[Any, dict[str, float]]:
    """Break per-item results down by ``key`` (difficulty level, data source, ...).

    Returns ``{group value: {metric: mean, ..., "count": items}}``. Every numeric field other than
    ``key`` is averaged (booleans count as 0/1, so a ``correct`` flag becomes an accuracy) over the
    items of the group that have it; None, NaN and non-numeric fields are ignored. Items without
    ``key`` go to the group ``None`` rather than vanishing from the totals.
    """
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for item in values:
        groups.setdefault(item.get(key), []).append(item)
    summary: dict[Any, dict[str, float]] = {}
    for group in sorted(groups, key=_group_order):
        items = groups[group]
        sums: dict[str, list[float]] = {}
        for item in items:
            for name, value in item.items():
                if name != key and _is_number(value):
                    sums.setdefault(name, []).append(float(value))
        row = {name: math.fsum(vals) / len(vals) for name, vals in sums.items()}
        row["count"] = len(items)
        summary[group] = row
    return summary
