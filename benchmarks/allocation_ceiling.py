"""How much can the value allocator move on the testbed's prompts? A simulation without a model.

    PYTHONPATH=src .venv/bin/python benchmarks/allocation_ceiling.py            # both testbeds
    PYTHONPATH=src .venv/bin/python benchmarks/allocation_ceiling.py --reps 16

The testbed runs (docs/benchmarks.md "Testbed") found e3rl's value allocator nearly inert and its
forecast of mixed groups too optimistic (0.70-0.78 expected, 0.58-0.63 measured). Two causes are
confounded there: the policy changes between a prompt's visits (its history goes stale), and each
prompt has only a few visits to learn from. This simulation removes the first: every prompt keeps
a fixed pass rate, drawn once from its base-model estimate (16 samples a prompt in the testbed's
base.json: p ~ Beta(k + 1/2, 16 - k + 1/2)), and each step's rewards are Bernoulli draws from
it. The allocators are e3rl's own objects (`DifficultyTracker`, `ValueAllocator`, the testbed's
`e3rl` settings: n_min 0, n_max 16, Beta(1, 1), re-check 0.05), on the testbed's schedule: 16
prompts a step from a reshuffled epoch, 128 rollouts a step, 600 steps. Arms: `uniform` (8 each),
`value`, `value_fit` (the same under the Beta prior fitted to the tracked prompts,
`budget.prior_fit=true`) and `oracle` (the same solver told the true pass rates). Per epoch it reports the share
of rollouts in mixed groups (the only ones with a GRPO signal), measured and as the allocator's
own posteriors expected it.

What it bounds: with a static population, history never goes stale, so `value`'s share here is
what its evidence alone allows, and `oracle`'s is what any allocation of this budget allows. What
it does not: learning. A mixed rollout is not worth the same on every prompt, and on the testbed a
higher mixed share did not speed learning (docs/benchmarks.md).
Results: benchmarks/results/testbed/allocation_ceiling.json and .md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from e3rl.control.allocation import value_allocation
from e3rl.control.allocators import ValueAllocator, current_prior
from e3rl.control.selection import mixed_shares
from e3rl.control.tracker import DifficultyTracker

RESULTS = Path("benchmarks/results/testbed")
# (name, base.json with the training prompts' pass rates, training prompts used)
POPULATIONS = (
    ("countdown-ws3000-const", RESULTS / "base.json", 2000),
    ("countdown-train1200", RESULTS / "candidates" / "countdown-train1200" / "base.json", 1200),
)
BATCH, N, STEPS, SAMPLES = 16, 8, 600, 16
ORACLE_STRENGTH = 1e7  # a Beta posterior this concentrated is the true pass rate


def true_rates(base_json: Path, limit: int, rng: np.random.Generator) -> np.ndarray:
    """One pass rate a prompt, drawn from its 16-sample estimate's Jeffreys posterior."""
    k = np.round(np.array(json.loads(base_json.read_text())["train_pass_rates"][:limit]) * SAMPLES)
    return rng.beta(k + 0.5, SAMPLES - k + 0.5)


def simulate(p: np.ndarray, arm: str, seed: int) -> list[dict]:
    """One run: per epoch, measured and expected shares of rollouts in mixed groups (expected
    under the posterior the allocator planned with; for `uniform`, the tracker's)."""
    rng, alloc_rng = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    ids = [f"p{i}" for i in range(len(p))]
    tracker = DifficultyTracker()
    tracker.register(ids)
    per_epoch = len(p) // BATCH
    epochs: dict[int, np.ndarray] = {}
    for step in range(STEPS):
        epoch, pos = divmod(step, per_epoch)
        idx = np.random.default_rng([seed, epoch]).permutation(len(p))[pos * BATCH :][:BATCH]
        batch_ids = [ids[i] for i in idx]
        s, f = tracker.successes_failures(batch_ids)
        prior = current_prior((1.0, 1.0), arm == "value_fit", tracker)
        if arm == "oracle":  # the value solver on the true pass rates
            s, f = p[idx] * ORACLE_STRENGTH, (1 - p[idx]) * ORACLE_STRENGTH
            counts = value_allocation(s, f, BATCH * N, 0, 16, prior)
        elif arm in ("value", "value_fit"):
            alloc = VALUE_FIT if arm == "value_fit" else VALUE
            counts = alloc.allocate(batch_ids, BATCH * N, tracker, epoch, step + 1, alloc_rng)
        else:
            counts = [N] * BATCH
        counts = np.asarray(counts)
        expected, _ = mixed_shares(prior[0] + s, prior[1] + f, counts, N)
        wins = rng.binomial(counts, p[idx])
        mixed = (wins > 0) & (wins < counts)
        tracker.update(  # rewards in any order: the tracker only counts them
            [i for i, c in zip(batch_ids, counts, strict=True) for _ in range(c)],
            [float(j < w) for w, c in zip(wins, counts, strict=True) for j in range(c)],
        )
        measured = counts[mixed].sum() / counts.sum()
        epochs[epoch] = epochs.get(epoch, np.zeros(3)) + (measured, expected, 1)
    return [
        {"epoch": e, "mixed_share": m / k, "expected_share": x / k}
        for e, (m, x, k) in sorted(epochs.items())
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=8, help="populations x runs (seeds 0..reps-1)")
    args = ap.parse_args()
    out: dict[str, dict] = {}
    lines = [
        "# What allocation can move on the testbed's prompts (benchmarks/allocation_ceiling.py)",
        "",
        f"Static pass rates from each base.json, {STEPS} steps of {BATCH} prompts x {N}, "
        f"{args.reps} runs (each its own draw of the pass rates). Share of rollouts in mixed "
        "groups by epoch, mean over runs (sd); `expected` = under the posteriors planned with.",
        "",
    ]
    for name, path, limit in POPULATIONS:
        runs = {arm: [] for arm in ("uniform", "value", "value_fit", "oracle")}
        for seed in range(args.reps):
            p = true_rates(path, limit, np.random.default_rng([seed, 0]))
            for arm in runs:
                runs[arm].append(simulate(p, arm, seed))
        table = {}
        for arm, rs in runs.items():
            shares = np.array([[r["mixed_share"] for r in run] for run in rs])
            expect = np.array([[r["expected_share"] for r in run] for run in rs])
            table[arm] = {
                "mixed_share": shares.mean(0).tolist(),
                "mixed_share_sd": shares.std(0, ddof=1).tolist(),
                "expected_share": expect.mean(0).tolist(),
                "run_mixed_share": shares.mean(1).tolist(),
            }
        out[name] = {"prompts": limit, "steps_per_epoch": limit // BATCH, "arms": table}
        n_ep = len(table["uniform"]["mixed_share"])
        lines += [
            f"## {name}: {limit} prompts, {limit // BATCH} steps an epoch",
            "",
            "| arm | " + " | ".join(f"epoch {e}" for e in range(n_ep)) + " | whole run |",
            "|---|" + "---|" * (n_ep + 1),
        ]
        for arm, t in table.items():
            cells = [
                f"{m:.3f} ({sd:.3f}) / exp. {x:.3f}"
                for m, sd, x in zip(
                    t["mixed_share"], t["mixed_share_sd"], t["expected_share"], strict=True
                )
            ]
            whole = np.mean(t["run_mixed_share"])
            lines.append(f"| {arm} | " + " | ".join(cells) + f" | {whole:.3f} |")
        lines.append("")
    (RESULTS / "allocation_ceiling.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "allocation_ceiling.md").write_text("\n".join(lines))
    print("\n".join(lines))


VALUE = ValueAllocator(0, 16, (1.0, 1.0), 0.05)  # the testbed's `e3rl` / `value` arms
VALUE_FIT = ValueAllocator(0, 16, (1.0, 1.0), 0.05, prior_fit=True)  # its `value_fit` arm


if __name__ == "__main__":
    main()
