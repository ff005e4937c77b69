"""What a prompt's pass rate will be at its next visit, learned from how earlier prompts moved.

The allocators plan on a Beta posterior of each prompt's pass rate built from its past groups.
On a real run the policy learns between a prompt's visits (an epoch apart), so that posterior
describes the prompt as it was: prompts forecast mixed have often become all-correct since, and
the forecast share of mixed groups runs 0.1-0.2 above what the step then gets (docs/benchmarks.md,
"Forecasts replayed on logged groups"). :class:`TransitionForecast` does not extrapolate a model of
learning; it asks the run itself: prompts whose last visit looked like this one's -- what do they
look like now? Each revisit is filed under the bin of its previous visit's smoothed rate, and a
prompt's forecast is the Beta prior fitted (:func:`fit_beta_prior`) to the outcomes of the latest
revisits in its bin.

Everything is numpy + stdlib and deterministic given its inputs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from e3rl.control.allocation import FIT_MIN_PROMPTS, fit_beta_prior

__all__ = ["TransitionForecast", "beta_of_outcomes"]


def beta_of_outcomes(outcomes: Sequence[tuple[int, int]]) -> tuple[float, float] | None:
    """The Beta fitted to (successes, rollouts) outcomes; ``None`` below ``FIT_MIN_PROMPTS`` groups
    of 2 or more. Where every rollout was right (or every one wrong), the moment fit has no spread
    to use; then a weak Beta (strength 2) at the smoothed rate ``(S + 1/2) / (N + 1)``, which
    forecasts such a bin as almost never mixed instead of falling back to a flat prior."""
    s = np.array([o[0] for o in outcomes], dtype=float)
    n = np.array([o[1] for o in outcomes], dtype=float)
    if np.count_nonzero(n >= 2) < FIT_MIN_PROMPTS:
        return None
    if s.sum() in (0.0, n.sum()):
        m = (s.sum() + 0.5) / (n.sum() + 1.0)
        return 2.0 * m, 2.0 * (1.0 - m)
    return fit_beta_prior(s, n - s)


class TransitionForecast:
    """Forecast Beta(a, b) of each prompt's pass rate from the transitions of earlier prompts.

    ``observe`` files each rolled group: a prompt seen before adds its outcome, labelled with the
    bin its previous visit fell in (the previous smoothed rate ``(s + 1) / (n + 2)`` cut into
    ``bins`` equal bins), to the revisit window, a prompt seen for the first time to the
    first-visit window; each window keeps its latest ``window`` groups (about an epoch's, so that
    the transitions are recent ones). ``forecast`` gives a seen prompt the Beta fitted to the
    window's revisits in its bin, an unseen one the first visits'; while those are too few, the
    prompt's last visit under the prior fitted to every prompt's last visit (``prior`` until that
    fit has enough prompts). ``keep > 0`` bins a prompt by its history instead of its last visit
    alone, each older visit weighted ``keep`` times the next.
    """

    def __init__(self, bins: int = 8, window: int = 2000, keep: float = 0.5) -> None:
        if bins < 1 or window < FIT_MIN_PROMPTS:
            raise ValueError(
                f"need bins >= 1 and window >= {FIT_MIN_PROMPTS}, got {bins}, {window}"
            )
        if not 0.0 <= keep < 1.0:
            raise ValueError(f"keep must be in [0, 1), got keep={keep}")
        self.bins, self.window, self.keep = int(bins), int(window), float(keep)
        self.last: dict[str, tuple[int, int]] = {}  # prompt id -> (successes, rollouts) last rolled
        self.key: dict[str, tuple[float, float]] = {}  # the (weighted) counts a prompt is binned by
        self.revisits: deque = deque(maxlen=self.window)  # (bin of the previous visit, s, n)
        self.first_visits: deque = deque(maxlen=self.window)
        self._fits: dict[Any, tuple[float, float] | None] = {}  # cached until the next observe

    def set_window(self, window: int) -> None:
        """Keep the latest ``window`` groups from now on (the tracker sets it to the number of
        prompts it knows: an epoch's revisits)."""
        window = max(int(window), FIT_MIN_PROMPTS)
        if window != self.window:
            self.window = window
            self.revisits = deque(self.revisits, maxlen=window)
            self.first_visits = deque(self.first_visits, maxlen=window)
            self._fits = {}

    def bin_of(self, successes: float, rollouts: float) -> int:
        return min(int((successes + 1) / (rollouts + 2) * self.bins), self.bins - 1)

    def observe(
        self, prompt_ids: Sequence[str], rollouts: Sequence[int], successes: Sequence[int]
    ) -> None:
        """One step's groups; prompts given 0 rollouts keep their last visit."""
        for pid, n, s in zip(prompt_ids, rollouts, successes, strict=True):
            n, s = int(n), int(s)
            if n == 0:
                continue
            if pid in self.last:
                self.revisits.append((self.bin_of(*self.key[pid]), s, n))
            else:
                self.first_visits.append((s, n))
            ks, kn = self.key.get(pid, (0.0, 0.0))
            self.last[pid], self.key[pid] = (s, n), (self.keep * ks + s, self.keep * kn + n)
        self._fits = {}

    def _fit(self, k: int) -> tuple[float, float] | None:
        """Bin ``k``'s fitted Beta (``k = -1``: first visits); every bin in one pass over the
        window, once per step."""
        if -1 not in self._fits:
            by_bin: list[list[tuple[int, int]]] = [[] for _ in range(self.bins)]
            for j, s, n in self.revisits:
                by_bin[j].append((s, n))
            self._fits = {j: beta_of_outcomes(w) for j, w in enumerate(by_bin)}
            self._fits[-1] = beta_of_outcomes(self.first_visits)
        return self._fits[k]

    def last_visit_prior(self, prior: Sequence[float] = (1.0, 1.0)) -> tuple[float, float]:
        """The Beta fitted to every prompt's last visit (``prior`` while too few are known)."""
        if "last" not in self._fits:
            sn = np.array(list(self.last.values()), dtype=float).reshape(-1, 2)
            self._fits["last"] = fit_beta_prior(sn[:, 0], sn[:, 1] - sn[:, 0], fallback=prior)
        return self._fits["last"]

    def forecast(
        self, prompt_ids: Sequence[str], prior: Sequence[float] = (1.0, 1.0)
    ) -> tuple[np.ndarray, np.ndarray]:
        """Beta (a, b) of each prompt's pass rate at this visit."""
        a, b = np.empty(len(prompt_ids)), np.empty(len(prompt_ids))
        for i, pid in enumerate(prompt_ids):
            last = self.last.get(pid)
            fit = self._fit(-1 if last is None else self.bin_of(*self.key[pid]))
            if fit is None:
                a0, b0 = self.last_visit_prior(prior)
                s, n = last or (0, 0)
                fit = (a0 + s, b0 + n - s)
            a[i], b[i] = fit
        return a, b

    def state_dict(self) -> dict[str, Any]:
        return {
            "bins": self.bins,
            "window": self.window,
            "keep": self.keep,
            "last": {k: list(v) for k, v in self.last.items()},
            "key": {k: list(v) for k, v in self.key.items()},
            "revisits": [list(o) for o in self.revisits],
            "first_visits": [list(o) for o in self.first_visits],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(int(state["bins"]), int(state["window"]), float(state["keep"]))
        self.last = {k: (int(v[0]), int(v[1])) for k, v in state["last"].items()}
        self.key = {k: (float(v[0]), float(v[1])) for k, v in state["key"].items()}
        self.revisits.extend((int(k), int(s), int(n)) for k, s, n in state["revisits"])
        self.first_visits.extend((int(s), int(n)) for s, n in state["first_visits"])
