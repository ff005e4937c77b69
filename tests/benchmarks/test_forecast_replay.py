"""The forecast replay (benchmarks/forecast_replay.py) on populations whose truth is known."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import forecast_replay as F  # noqa: E402


def _rows(drift: float, epochs: int = 5, prompts: int = 2000, batch: int = 16, seed: int = 0):
    """Logged groups of 8 from pass rates with logits ~ N(-0.5, 2.5) (U-shaped rates), each
    prompt's logit moving by `drift` every epoch; every epoch is a fresh permutation. The
    testbed's sizes: 2,000 prompts, 16 a step, so an epoch's revisits fill the window."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-0.5, 2.5, prompts)
    rows = []
    for epoch in range(epochs):
        rate = 1 / (1 + np.exp(-(logit + drift * epoch)))
        order = rng.permutation(prompts)
        for k in range(0, prompts, batch):
            idx = order[k : k + batch]
            s = rng.binomial(8, rate[idx])
            rows.append(
                {
                    "epoch": epoch,
                    "groups": [[f"p{i}", 8, int(w)] for i, w in zip(idx, s, strict=True)],
                }
            )
    return rows


@pytest.fixture(scope="module")
def still():
    return F.replay(_rows(drift=0.0))


@pytest.fixture(scope="module")
def moving():
    return F.replay(_rows(drift=1.0))


def test_without_drift_the_fitted_forecasts_are_calibrated(still):
    res = still
    for name in ("fit", "fit-last", "transition"):
        errs = [res[name][e]["error"] for e in range(1, 5)]
        assert max(map(abs, errs)) <= F.CALIBRATED, (name, errs)
    # the flat prior is not, even here: it thinks a prompt seen 8 of 8 may well be mixed next
    assert res["flat"][1]["error"] > 0.05


def test_under_drift_the_posterior_goes_stale_and_the_transitions_follow(moving):
    res = moving
    assert res["fit"][4]["error"] > 0.05
    errs = [res["transition"][e]["error"] for e in range(1, 5)]
    assert max(map(abs, errs)) <= F.CALIBRATED, errs
    assert res["transition"][4]["logloss"] < res["fit"][4]["logloss"]


def test_verdicts_read_every_run_and_epoch_after_the_first(still, moving):
    per_run = {"still": still, "moving": moving}
    v = F.verdicts(per_run)
    assert v["transition"]["calibrated"] and not v["fit"]["calibrated"]
    worst = max((per_run[r]["fit"][e]["error"] for r in per_run for e in range(1, 5)), key=abs)
    assert v["fit"]["worst_error"] == worst
    assert "| transition | yes |" in F.markdown(per_run, v)


def test_roc_auc_by_hand():
    # pairs (mixed, not mixed): (0.9 > 0.1), (0.9 > 0.5), (0.5 = 0.5: half), (0.5 > 0.1) -> 3.5 / 4
    score = np.array([0.9, 0.5, 0.5, 0.1])
    assert F.roc_auc(score, np.array([1, 1, 0, 0])) == 3.5 / 4
    assert F.roc_auc(score, np.array([0, 0, 0, 0])) != F.roc_auc(score, np.array([0, 0, 0, 0]))
