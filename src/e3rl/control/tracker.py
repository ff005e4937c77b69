"""Online per-prompt difficulty: decayed rollout/success counts and difficulty ranks.

Everything is numpy + stdlib and deterministic given its inputs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from e3rl.control.forecast import TransitionForecast

__all__ = ["DifficultyTracker"]


def _stable_hash(prompt_id: str) -> int:
    """64-bit hash of an id, identical across processes and runs (unlike the builtin ``hash``)."""
    return int.from_bytes(hashlib.blake2b(prompt_id.encode(), digest_size=8).digest(), "big")


class DifficultyTracker:
    """Online difficulty of every prompt, as (decayed) counts of rollouts and successes.

    Decay semantics: each :meth:`update` call (one training step) first multiplies *all* stored
    counts by ``decay`` and then adds that step's counts, so
    ``counts_t = decay * counts_{t-1} + step_counts_t``. ``decay=1`` keeps the full history (the
    paper's cumulative mean); smaller values let old evidence fade as the policy improves.

    Ranks: prompts sorted by mean accuracy (successes / rollouts), highest first, ``r = pos / N``
    with ``N`` = number of known prompts (``register`` the whole dataset so that ``N`` is its size),
    so ``r in [0, 1)`` and 0 is the easiest. Unseen prompts (no rollouts, or all history decayed to
    zero) are the hardest (``unseen="hardest"``, the paper) or sit at accuracy 0.5
    (``unseen="prior"``). Ties are broken by a stable hash of the id, not by dataset order, so tied
    prompts get a pseudo-random but reproducible order. ``rank_refresh="step"`` ranks on the live
    counts; ``"epoch"`` (the paper) ranks on a snapshot taken at :meth:`end_epoch`, so before the
    first epoch end every prompt is unseen.

    Beliefs (:meth:`beliefs`, what the value allocator plans on): ``forecast="posterior"`` is each
    prompt's Beta posterior from its counts; ``"transition"`` the :class:`TransitionForecast` of
    its pass rate at this visit, learned from how earlier prompts moved between visits (over the
    latest ``N`` revisits, about an epoch's; prompts binned by their history with each older
    visit weighted ``forecast_keep``).
    """

    def __init__(
        self,
        success_threshold: float = 1.0,
        decay: float = 1.0,
        rank_refresh: str = "step",
        unseen: str = "hardest",
        forecast: str = "posterior",
        forecast_keep: float = 0.5,
    ) -> None:
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got decay={decay}")
        if rank_refresh not in ("step", "epoch"):
            raise ValueError(f"rank_refresh must be 'step' or 'epoch', got {rank_refresh!r}")
        if unseen not in ("hardest", "prior"):
            raise ValueError(f"unseen must be 'hardest' or 'prior', got {unseen!r}")
        if forecast not in ("posterior", "transition"):
            raise ValueError(f"forecast must be 'posterior' or 'transition', got {forecast!r}")
        self.forecast, self.forecast_keep = forecast, float(forecast_keep)
        self.success_threshold = float(success_threshold)
        self.decay = float(decay)
        self.rank_refresh = rank_refresh
        self.unseen = unseen
        self._reset()

    def _reset(self) -> None:
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._hash = np.zeros(0, dtype=np.uint64)
        self._rollouts = np.zeros(0)
        self._successes = np.zeros(0)
        self._frozen = np.zeros(0)  # accuracy snapshot at the last end_epoch; nan = unseen then
        self._rank_cache: np.ndarray | None = None
        self.transitions = (
            TransitionForecast(keep=self.forecast_keep) if self.forecast == "transition" else None
        )
        self.steps = 0
        self.epochs = 0

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def num_seen(self) -> int:
        """Number of prompts with a non-zero (decayed) rollout count."""
        return int(np.count_nonzero(self._rollouts > 0))

    def register(self, prompt_ids: Sequence[str]) -> None:
        """Make ids known (as unseen) so that they count in ``N``. Idempotent and cheap."""
        new = [p for p in dict.fromkeys(prompt_ids) if p not in self._index]
        if not new:
            return
        for k, pid in enumerate(new, start=len(self._ids)):
            self._index[pid] = k
        self._ids.extend(new)
        hashes = np.array([_stable_hash(p) for p in new], dtype=np.uint64)
        self._hash = np.concatenate([self._hash, hashes])
        self._rollouts = np.concatenate([self._rollouts, np.zeros(len(new))])
        self._successes = np.concatenate([self._successes, np.zeros(len(new))])
        self._frozen = np.concatenate([self._frozen, np.full(len(new), np.nan)])
        self._rank_cache = None  # N changed
        if self.transitions is not None:  # recent transitions: about one epoch's revisits
            self.transitions.set_window(len(self))

    def update(self, prompt_ids: Sequence[str], rewards: Sequence[float]) -> None:
        """Record one step: one (id, reward) per rollout; ``reward >= success_threshold`` wins.

        Step counts are summed per prompt before being added, so counts stay exact integers when
        ``decay == 1``. A NaN reward counts as a failure.
        """
        if len(prompt_ids) != len(rewards):
            raise ValueError(f"got {len(prompt_ids)} prompt ids but {len(rewards)} rewards")
        self.register(prompt_ids)
        idx = np.array([self._index[p] for p in prompt_ids], dtype=np.int64)
        won = (np.asarray(rewards, dtype=float) >= self.success_threshold).astype(float)
        if self.decay != 1.0:
            self._rollouts *= self.decay
            self._successes *= self.decay
        step_n = np.bincount(idx, minlength=len(self))
        step_s = np.bincount(idx, weights=won, minlength=len(self))
        self._rollouts += step_n
        self._successes += step_s
        if self.transitions is not None:
            step_ids = list(dict.fromkeys(prompt_ids))
            k = np.array([self._index[p] for p in step_ids], dtype=np.int64)
            self.transitions.observe(
                step_ids, step_n[k].tolist(), step_s[k].astype(np.int64).tolist()
            )
        self.steps += 1
        if self.rank_refresh == "step":
            self._rank_cache = None

    def end_epoch(self) -> None:
        """Snapshot accuracies for ``rank_refresh="epoch"`` (kept in both modes, for resumes)."""
        self._frozen = self._accuracy()
        self.epochs += 1
        if self.rank_refresh == "epoch":
            self._rank_cache = None

    def _accuracy(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._rollouts > 0, self._successes / self._rollouts, np.nan)

    def _indices(self, prompt_ids: Sequence[str]) -> np.ndarray:
        missing = [p for p in prompt_ids if p not in self._index]
        if missing:
            raise KeyError(f"unknown prompt ids {missing[:5]}; call register() or update() first")
        return np.array([self._index[p] for p in prompt_ids], dtype=np.int64)

    def _rank_table(self) -> np.ndarray:
        if self._rank_cache is None:
            acc = self._accuracy() if self.rank_refresh == "step" else self._frozen
            key = np.where(np.isnan(acc), -np.inf if self.unseen == "hardest" else 0.5, acc)
            order = np.lexsort((self._hash, -key))  # accuracy descending, then hash
            table = np.empty(len(self))
            table[order] = np.arange(len(self)) / max(len(self), 1)
            self._rank_cache = table
        return self._rank_cache

    def ranks(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """Difficulty ranks in [0, 1) (0 = easiest) of known prompts; unknown ids raise KeyError."""
        return self._rank_table()[self._indices(prompt_ids)]

    def mean_accuracy(self, prompt_ids: Sequence[str]) -> np.ndarray:
        """Live (decayed) successes / rollouts; NaN for unseen prompts."""
        return self._accuracy()[self._indices(prompt_ids)]

    def successes_failures(self, prompt_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Live decayed success and failure counts (failures >= 0 exactly: decay preserves s<=n)."""
        idx = self._indices(prompt_ids)
        s = self._successes[idx]
        return s, self._rollouts[idx] - s

    def beliefs(
        self, prompt_ids: Sequence[str], prior: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Beta (a, b) of each prompt's pass rate as the allocator should plan on it: the
        posterior ``prior + counts``, or with ``forecast="transition"`` the transition forecast
        (``prior`` then only where it has too few transitions to go on)."""
        if self.transitions is not None:
            self._indices(prompt_ids)  # unknown ids raise here too
            return self.transitions.forecast(prompt_ids, prior)
        s, f = self.successes_failures(prompt_ids)
        return float(prior[0]) + s, float(prior[1]) + f

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Live decayed success and failure counts of every known prompt (copies)."""
        return self._successes.copy(), self._rollouts - self._successes

    def state_dict(self) -> dict[str, Any]:
        """Counts as plain lists (JSON round-trips floats exactly); config stays the caller's."""
        return {
            "ids": list(self._ids),
            "rollouts": self._rollouts.tolist(),
            "successes": self._successes.tolist(),
            "frozen_accuracy": [None if math.isnan(x) else x for x in self._frozen.tolist()],
            "steps": self.steps,
            "epochs": self.epochs,
            **({} if self.transitions is None else {"transitions": self.transitions.state_dict()}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ids = list(state["ids"])
        if not len(ids) == len(state["rollouts"]) == len(state["successes"]):
            raise ValueError("tracker state has lists of different lengths")
        self._reset()
        self.register(ids)
        self._rollouts = np.array(state["rollouts"], dtype=float).reshape(-1)
        self._successes = np.array(state["successes"], dtype=float).reshape(-1)
        frozen = [math.nan if x is None else x for x in state["frozen_accuracy"]]
        self._frozen = np.array(frozen, dtype=float).reshape(-1)
        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])
        if self.transitions is not None:
            if "transitions" not in state:
                raise ValueError("tracker state has no transitions, but forecast='transition'")
            self.transitions.load_state_dict(state["transitions"])
