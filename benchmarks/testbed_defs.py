"""What the testbed suite (benchmarks/testbed.py) compares: the candidate testbeds and the arms.

Declared here, apart from the runner, so that a reader sees every testbed and every arm's
overrides on one screen; docs/benchmarks.md says why each exists and what it measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import arms

# the testbed of benchmarks/results/testbed/ (docs/benchmarks.md: why this one)
CHOSEN = "countdown-ws3000-const"
PASS_K = (1, 2, 4, 8, 16, 32, 64)
SPREAD_SAMPLES = 16  # samples per training prompt for the base's pass-rate spread


def _testbed(*extra: str, config: str = "configs/testbed.yaml", accuracy: str = "pass@1") -> dict:
    """A testbed: `config` (default the chosen Countdown one) with `extra` overrides."""
    return {
        "config": config,
        "overrides": ["model.warm_start.seed=0", *extra],
        "steps": 600,
        "eval_every": 25,
        "pass_n": 64,
        "accuracy": accuracy,
        "eval_n": 4,
        "spread_limit": 2000,  # every training prompt
        "quick": {"steps": 20, "eval_every": 5, "pass_n": 8},
    }


# The candidates of docs/benchmarks.md "Testbed", in the order they were measured. Accuracy is
# pass@1 at T=1 from eval_n samples a validation prompt (greedy accuracy plateaued while the
# sampled one kept rising: countdown-greedy, the first).
TESTBEDS: dict[str, dict] = {
    "countdown-greedy": _testbed(
        "model.warm_start.steps=1500",
        "optim.schedule=cosine",
        "trainer.eval_n=0",
        accuracy="greedy",
    ),
    "countdown": _testbed("model.warm_start.steps=1500", "optim.schedule=cosine"),
    # twice the warm start: a sharper base (a candidate for more prompts the base solves)
    "countdown-ws3000": _testbed("optim.schedule=cosine"),
    # and a constant learning rate after warm-up: cosine decay leaves the second half of a run
    # 18 % of the total learning rate, so "still gains late" was partly a test of the schedule
    "countdown-ws3000-const": _testbed(),
    # the second round (docs/benchmarks.md): the same base, training on its first 1,200 prompts
    # (level 1's 175 and 342 of each other level: the share the base solves >= 15 times in 16
    # rises from 0.16 to about 0.22), and that with half the learning rate (a longer curve?)
    "countdown-train1200": {**_testbed("data.train_limit=1200"), "spread_limit": 1200},
    "countdown-train1200-lr2": {
        **_testbed("data.train_limit=1200", "optim.lr=2.5e-5"),
        "spread_limit": 1200,
    },
    # a model four times larger (4.3M parameters: width 256, MLP 1024), its own warm start
    "countdown-train1200-4m": {
        **_testbed(
            "data.train_limit=1200",
            "model.tiny.hidden_size=256",
            "model.tiny.intermediate_size=1024",
        ),
        "spread_limit": 1200,
    },
    # the third round: multi-digit addition worked column by column (e3rl.tasks.addition) on a
    # weakly warm-started base, worked answers only: the column skill that RL sharpens lifts
    # short sums first and long ones later (a long curve?)
    "addition": _testbed(config="configs/testbed-addition.yaml"),
    # the demo task as benchmarks/arms.py runs it: 800 training prompts, so prompts come back
    "arith": {
        "config": "configs/demo.yaml",
        "overrides": ["data.train_limit=800", "model.warm_start.seed=0"],
        "steps": 300,
        "eval_every": 25,
        "pass_n": 64,
        "spread_limit": 400,  # training prompts whose base pass rate is measured
        "quick": {"steps": 20, "eval_every": 5, "pass_n": 8},
    },
}

VALUE = ["budget.allocator=value", "budget.n_min=0", "budget.n_max=16"]
# e3rl's temperature control as configs/e3rl.yaml sets it (the `temp` arm is it alone)
TEMP = [
    "rollout.temperature_control=entropy",
    "temperature.warmup_steps=10",
    "temperature.anneal=true",
]
# configs/e3rl.yaml over configs/demo.yaml, key for key (a test keeps them equal)
E3RL = [
    *VALUE,
    "budget.rank_refresh=step",
    "budget.prior=[1.0,1.0]",
    "budget.recheck_prob=0.05",
    *TEMP,
    "reward.length_bias.mu=0.001",
    "reward.length_bias.threshold=0.1",
]
ARMS: dict[str, list[str]] = {
    "uniform": [],
    "paper": arms.ARMS["paper"],
    "e3rl": E3RL,
    "value": VALUE,
    "temp": TEMP,
    "entropy_bonus": ["algo.entropy_coef=0.01"],
    # the value allocator under the Beta prior fitted to the tracked prompts (empirical Bayes)
    "value_fit": [*VALUE, "budget.prior_fit=true"],
    # and its posteriors forgetting between visits (0.99 a step: a visit 125 steps back weighs 0.28),
    # against the drift that leaves value_fit's forecast optimistic on real runs
    "value_fit_decay": [*VALUE, "budget.prior_fit=true", "budget.decay=0.99"],
    # and planning on the transition forecast (what prompts that looked like this one a visit ago
    # look like now) instead of the stale posterior: binned by the last visit (as first run), and
    # by the half-weighted history (the default since the replay, docs/benchmarks.md)
    "value_transition": [
        *VALUE,
        "budget.prior_fit=true",
        "budget.forecast=transition",
        "budget.forecast_keep=0",
    ],
    "value_transition_history": [
        *VALUE,
        "budget.prior_fit=true",
        "budget.forecast=transition",
        "budget.forecast_keep=0.5",
    ],
    # uniform GRPO that does not roll the prompts the shipped forecast gives under a 0.2 chance of
    # a mixed group (a group with no GRPO signal), re-checked 1 time in 20: fewer rollouts a step
    "skip": [
        "budget.prior_fit=true",
        "budget.forecast=transition",
        "budget.forecast_keep=0.5",
        "budget.skip_below=0.2",
    ],
    # issue 16's selection: twice the batch offered, the budget to expected mixed-group rollouts
    "selection": [
        *E3RL,
        "budget.value_objective=mixed_rollouts",
        "data.candidates_per_step={twice_batch}",
    ],
}
QUICK_ARMS, QUICK_SEEDS = "uniform,e3rl", "0,1"
FINAL_T_TOLERANCE = 0.01
"""A run whose last sampling temperature is further than this from 1 is also evaluated there."""


def testbed_config(name: str, extra: Sequence[str] = ()) -> dict:
    """The testbed's entry with the resolved config facts the suite needs (budget, sources)."""
    if name not in TESTBEDS:
        raise SystemExit(f"--testbed {name!r} is unknown; valid: {', '.join(TESTBEDS)}")
    from e3rl.config_io import load_config

    tb = dict(TESTBEDS[name], name=name)
    cfg = load_config(tb["config"], [*tb["overrides"], *extra])
    tb.update(
        batch_size=cfg.data.batch_size,
        budget=cfg.data.batch_size * cfg.rollout.n,
        train_source=cfg.data.train,
        val_source=cfg.data.val,
    )
    if tb["val_source"] is None:
        raise SystemExit(f"testbed {name!r}: data.val is null; the suite validates on it")
    return tb


def arm_overrides(arm: str, batch_size: int) -> list[str]:
    if arm not in ARMS:
        raise SystemExit(f"--arms: {arm!r} is unknown; valid: {', '.join(ARMS)}")
    return [o.format(twice_batch=2 * batch_size) for o in ARMS[arm]]
