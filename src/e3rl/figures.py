"""Report figures, one builder per PNG: each takes the runs and a colour per run and returns a
matplotlib Figure, or a string saying why it was skipped. The same run has the same colour in
every figure.

matplotlib is imported lazily and only through its object-oriented API (no pyplot), so plotting
never needs a display or touches global backend state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

from e3rl.runs import RunData, as_float

DPI = 120
STEP_LABEL = "training step"
PANEL_SIZE = (5.2, 3.6)  # inches per panel: readable at dpi 120 in a markdown viewer

# --------------------------------------------------------------------------------------------
# Plot helpers


def _new_figure(ncols: int, nrows: int = 1) -> tuple[Figure, np.ndarray]:
    from matplotlib.figure import Figure

    fig = Figure(
        figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + 0.5), dpi=DPI, layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    return fig, axes


def run_colors(runs: Sequence[RunData]) -> dict[str, Any]:
    """One fixed colour per run, shared by every figure."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {run.name: cmap(i % cmap.N) for i, run in enumerate(runs)}


def integer_steps(fig: Figure) -> None:
    """Steps are integers: no 2.5-step ticks on short runs."""
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:
        if ax.get_xlabel() == STEP_LABEL:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _run_legend(fig: Figure, runs: Sequence[RunData], colors: Mapping[str, Any]) -> None:
    """A single legend of run names below all panels (panels stay uncluttered)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[r.name], lw=2.5, label=r.name) for r in runs]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 4),
        frameon=False,
        fontsize="medium",
    )


def _style_legend(ax: Axes, styles: Sequence[tuple[str, str]]) -> None:
    """A small grey legend that explains line styles (solid/dashed/faint) inside a panel."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.35", **_STYLES[s], label=label) for s, label in styles]
    ax.legend(handles=handles, fontsize="small", loc="best", framealpha=0.8)


_STYLES: dict[str, dict[str, Any]] = {
    "solid": {"ls": "-", "lw": 1.8},
    "dashed": {"ls": "--", "lw": 1.4},
    "dotted": {"ls": ":", "lw": 1.6},
    "faint": {"ls": "-", "lw": 0.8, "alpha": 0.3},
}


def _target_style() -> dict[str, Any]:
    """Dashed, on top, with a white halo: a target must stay visible over the line that tracks it."""
    from matplotlib import patheffects

    halo = [patheffects.Stroke(linewidth=3.2, foreground="white"), patheffects.Normal()]
    return {**_STYLES["dashed"], "zorder": 3, "path_effects": halo}


def rolling_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling mean; the ends average over the part of the window that exists."""
    if window <= 1 or len(y) < 3:
        return y.astype(np.float64)
    half = window // 2
    csum = np.concatenate([[0.0], np.cumsum(y, dtype=np.float64)])
    idx = np.arange(len(y))
    lo, hi = np.clip(idx - half, 0, len(y)), np.clip(idx + half + 1, 0, len(y))
    return (csum[hi] - csum[lo]) / (hi - lo)


def _smoothing_window(n_points: int) -> int:
    """About a tenth of the run, so that trends show without hiding phase changes."""
    return max(1, min(51, n_points // 10))


def _plot_smoothed(ax: Axes, x: np.ndarray, y: np.ndarray, color: Any) -> None:
    window = _smoothing_window(len(y))
    if window > 1:
        ax.plot(x, y, color=color, **_STYLES["faint"])
    ax.plot(x, rolling_mean(y, window), color=color, **_STYLES["solid"])


def _count_formatter():
    from matplotlib.ticker import EngFormatter

    return EngFormatter(sep="")


# --------------------------------------------------------------------------------------------
# Figures: each returns a Figure, or a string that says why it was skipped.

FigureFn = Callable[[Sequence[RunData], Mapping[str, Any]], "Figure | str"]


def _fig_validation(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    with_val = [r for r in runs if r.has("val_accuracy")]
    if not with_val:
        return "no run logged `val_accuracy` (validation never ran)"
    fig, axes = _new_figure(2)
    for run in with_val:
        for ax, x in zip(axes[0], ("cum_rollouts", "step"), strict=True):
            xs, ys = run.series("val_accuracy", x=x)
            base = as_float((run.summary or {}).get("base_val_accuracy"))
            if base is not None:  # the base model, before any rollout: where the curve starts
                xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[base], ys])
            ax.plot(xs, ys, color=colors[run.name], marker="o", ms=3.5, **_STYLES["solid"])
    axes[0, 0].set_xlabel("cumulative rollouts (sampled responses)")
    axes[0, 0].xaxis.set_major_formatter(_count_formatter())
    axes[0, 0].set_title("Validation accuracy vs rollouts spent")
    axes[0, 1].set_xlabel(STEP_LABEL)
    axes[0, 1].set_title("Validation accuracy vs step")
    for ax in axes[0]:
        ax.set_ylabel("validation accuracy (fraction correct)")
    _run_legend(fig, with_val, colors)
    return fig


def _fig_entropy_temperature(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    with_h = [r for r in runs if r.has("entropy") or r.has("temperature")]
    if not with_h:
        return "no run logged `entropy` or `temperature`"
    show_t1 = any(r.has("entropy_t1") for r in with_h)
    fig, axes = _new_figure(3 if show_t1 else 2)
    ax_h, ax_t = axes[0, 0], axes[0, -1]
    any_target = False
    for run in with_h:
        color = colors[run.name]
        _plot_smoothed(ax_h, *run.series("entropy"), color)
        if run.has("target_entropy"):
            any_target = True
            ax_h.plot(*run.series("target_entropy"), color=color, **_target_style())
        ax_t.plot(*run.series("temperature"), color=color, **_STYLES["solid"])
        if show_t1:
            _plot_smoothed(axes[0, 1], *run.series("entropy_t1"), color)
    ax_h.set_title("Policy entropy at the sampling temperature")
    ax_h.set_ylabel("entropy (nats / response token)")
    smoothed = any(_smoothing_window(len(r.series("entropy")[1])) > 1 for r in with_h)
    styles = [("solid", "rolling mean"), ("faint", "per step")] if smoothed else []
    if any_target:
        styles.append(("dashed", "target"))
    if styles:
        _style_legend(ax_h, styles)
    if show_t1:
        axes[0, 1].set_title("Policy entropy at T = 1")
        axes[0, 1].set_ylabel("entropy (nats / response token)")
    ax_t.set_title("Sampling temperature")
    ax_t.set_ylabel("temperature T (unitless)")
    for ax in axes[0]:
        ax.set_xlabel(STEP_LABEL)
    _run_legend(fig, with_h, colors)
    return fig


def _fig_group_outcomes(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    keys = ("frac_all_wrong", "frac_all_correct")
    with_g = [r for r in runs if any(r.has(k) for k in keys)]
    if not with_g:
        return "no run logged `frac_all_wrong` / `frac_all_correct`"
    from matplotlib.ticker import PercentFormatter

    fig, axes = _new_figure(2)
    titles = ("All-wrong groups (no signal: too hard)", "All-correct groups (no signal: too easy)")
    for ax, key, title in zip(axes[0], keys, titles, strict=True):
        for run in with_g:
            xs, ys = run.series(key)
            if len(ys):
                _plot_smoothed(ax, xs, ys, colors[run.name])
        ax.set_title(title)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel("share of prompt groups")
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.set_ylim(bottom=0)
    longest = max(len(r.series(keys[0])[1]) for r in with_g)
    if _smoothing_window(longest) > 1:
        _style_legend(axes[0, 0], [("solid", "rolling mean"), ("faint", "per step")])
    _run_legend(fig, with_g, colors)
    return fig


def _fig_allocation(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    with_a = [r for r in runs if r.has("alloc_mean")]
    if not with_a:
        return "no run logged `alloc_min` / `alloc_mean` / `alloc_max`"
    fig, axes = _new_figure(1)
    ax = axes[0, 0]
    fig.set_size_inches(PANEL_SIZE[0] * 1.6, PANEL_SIZE[1] + 0.5)
    for run in with_a:
        color = colors[run.name]
        xs, mean = run.series("alloc_mean")
        lo_x, lo = run.series("alloc_min")
        hi_x, hi = run.series("alloc_max")
        if (
            len(lo) == len(hi) == len(mean)
            and np.array_equal(lo_x, xs)
            and np.array_equal(hi_x, xs)
        ):
            ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0, step="mid")
            for edge in (lo, hi):  # edges stay readable where the bands of two runs overlap
                ax.step(xs, edge, where="mid", color=color, lw=0.8, alpha=0.7)
        ax.plot(xs, mean, color=color, **_STYLES["solid"])
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Rollouts per prompt: mean (thick) and min–max range (band)")
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("rollouts per prompt")
    _run_legend(fig, with_a, colors)
    return fig


def _alloc_matrix(run: RunData) -> tuple[np.ndarray, dict[int, np.ndarray]] | None:
    """``(steps, {n: share of the batch's prompts given n rollouts, per step})``."""
    steps, hists = [], []
    for row in run.metrics:
        hist, step = row.get("alloc_hist"), as_float(row.get("step"))
        if isinstance(hist, dict) and hist and step is not None:
            steps.append(step)
            hists.append({int(n): float(count) for n, count in hist.items()})
    if not steps:
        return None
    shares: dict[int, np.ndarray] = {}
    for j, hist in enumerate(hists):
        total = sum(hist.values()) or 1.0
        for n, count in hist.items():
            shares.setdefault(n, np.zeros(len(steps)))[j] = count / total
    return np.asarray(steps), shares


def _bin_columns(steps: np.ndarray, share: np.ndarray, max_cols: int) -> tuple[np.ndarray, ...]:
    """Average neighbouring steps so that a long run is not drawn as sub-pixel stripes."""
    if len(steps) <= max_cols:
        return steps, share
    bins = np.array_split(np.arange(len(steps)), max_cols)
    binned = np.stack([share[:, b].mean(axis=1) for b in bins], axis=1)
    return np.array([steps[b].mean() for b in bins]), binned


def _edges(centres: np.ndarray) -> np.ndarray:
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _fig_allocation_hist(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    mats = [(r, m) for r in runs if (m := _alloc_matrix(r)) is not None]
    if not mats:
        return "no run logged `alloc_hist`"
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import MaxNLocator

    all_n = [n for _, (_, shares) in mats for n in shares]
    ns = np.arange(min(all_n), max(all_n) + 1)  # one n range for all panels: comparable rows
    ncols = min(len(mats), 3)
    nrows = math.ceil(len(mats) / ncols)
    fig, axes = _new_figure(ncols, nrows)
    if len(mats) == 1:
        fig.set_size_inches(PANEL_SIZE[0] * 1.6, PANEL_SIZE[1] + 0.5)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)  # small shares stay distinguishable
    mesh = None
    for ax, (run, (steps, shares)) in zip(axes.flat, mats, strict=False):
        share = np.stack([shares.get(int(n), np.zeros(len(steps))) for n in ns])
        steps_b, share_b = _bin_columns(steps, share, max_cols=150)
        masked = np.ma.masked_equal(share_b, 0.0)  # counts never given stay blank
        mesh = ax.pcolormesh(
            _edges(steps_b), _edges(ns.astype(float)), masked, cmap="viridis", norm=norm
        )
        ax.set_title(run.name, color=colors[run.name], fontweight="bold")
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel("rollouts per prompt")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(False)
    for ax in list(axes.flat)[len(mats) :]:
        ax.set_visible(False)
    fig.suptitle("Allocation histogram: share of the batch's prompts given n rollouts")
    fig.colorbar(mesh, ax=axes, label="share of prompts in the batch", shrink=0.9)
    return fig


def eval_pass_at_k(run: RunData) -> dict[int, float]:
    raw = (run.eval or {}).get("pass_at_k") or {}
    out = {}
    for k, v in raw.items():
        try:
            value = as_float(v)
            if value is not None:
                out[int(k)] = value
        except (TypeError, ValueError):
            continue
    return dict(sorted(out.items()))


def _fig_pass_at_k(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    with_e = [r for r in runs if eval_pass_at_k(r)]
    if not with_e:
        return "no run has an `eval.json` with `pass_at_k`"
    fig, axes = _new_figure(1)
    ax = axes[0, 0]
    fig.set_size_inches(PANEL_SIZE[0] * 1.3, PANEL_SIZE[1] + 0.5)
    all_k: set[int] = set()
    for run in with_e:
        curve = eval_pass_at_k(run)
        all_k |= set(curve)
        marker = "o" if len(curve) <= 16 else None  # dense curves: markers would merge
        ax.plot(list(curve), list(curve.values()), color=colors[run.name], marker=marker, ms=4)
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    ax.set_xscale("log", base=2)
    ticks = sorted(all_k)
    if len(ticks) > 10:  # every k would crowd the axis: label powers of two and the largest
        ticks = sorted({k for k in ticks if k & (k - 1) == 0} | {ticks[-1]})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(FixedLocator([]))
    ax.set_xlabel("k (samples per prompt, log₂ scale)")
    ax.set_ylabel("pass@k (fraction of prompts solved)")
    ax.set_title("pass@k on the evaluation set (unbiased estimator)")
    _run_legend(fig, with_e, colors)
    return fig


_DIAGNOSTICS = (
    ("reward_mean", "Mean reward", "reward per rollout"),
    ("loss", "Policy loss", "loss (per token)"),
    ("kl", "KL to reference", "KL (nats / token)"),
    ("clip_frac", "Clipped ratio fraction", "fraction of tokens clipped"),
    ("grad_norm", "Gradient norm (before clipping)", "L2 norm"),
    ("tokens", "Tokens generated per step", "tokens / step"),
)


def _fig_training(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    # A metric that is 0 in every run (KL without a reference model) would be a wasted panel.
    panels = [p for p in _DIAGNOSTICS if any(np.any(r.series(p[0])[1] != 0) for r in runs)]
    if not panels:
        return "no training diagnostics (`reward_mean`, `loss`, `kl`, ...) were logged"
    ncols = min(len(panels), 3)
    fig, axes = _new_figure(ncols, math.ceil(len(panels) / ncols))
    for ax, (key, title, unit) in zip(axes.flat, panels, strict=False):
        for run in runs:
            xs, ys = run.series(key)
            if len(ys):
                _plot_smoothed(ax, xs, ys, colors[run.name])
        ax.set_title(title)
        ax.set_xlabel(STEP_LABEL)
        ax.set_ylabel(unit)
        if key == "tokens":
            ax.yaxis.set_major_formatter(_count_formatter())
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Training diagnostics (rolling mean; raw values faint)")
    _run_legend(fig, [r for r in runs if any(r.has(p[0]) for p in panels)], colors)
    return fig


TIME_KEYS = (("time_generate", "generate"), ("time_reward", "reward"), ("time_update", "update"))


def _fig_time(runs: Sequence[RunData], colors: Mapping[str, Any]) -> Figure | str:
    with_t = [r for r in runs if any(r.has(k) for k, _ in TIME_KEYS)]
    if not with_t:
        return "no run logged `time_generate` / `time_reward` / `time_update`"
    fig, axes = _new_figure(1)
    ax = axes[0, 0]
    fig.set_size_inches(PANEL_SIZE[0] * 1.4, 1.6 + 0.45 * len(with_t))
    parts = ["#4c72b0", "#dd8452", "#55a868"]  # phases, not runs: a palette of their own
    y = np.arange(len(with_t))
    left = np.zeros(len(with_t))
    for (key, label), color in zip(TIME_KEYS, parts, strict=True):
        widths = np.array([np.mean(r.series(key)[1]) if r.has(key) else 0.0 for r in with_t])
        ax.barh(y, widths, left=left, color=color, label=label, height=0.6)
        left += widths
    for yi, total in zip(y, left, strict=True):
        ax.text(total, yi, f"  {total:.2f} s", va="center", fontsize="small")
    ax.set_yticks(y, [r.name for r in with_t])
    for tick, run in zip(ax.get_yticklabels(), with_t, strict=True):
        tick.set_color(colors[run.name])
    ax.invert_yaxis()
    ax.set_xlim(0, left.max() * 1.18 if left.max() > 0 else 1)
    ax.set_xlabel("mean wall-clock time per training step (seconds)")
    ax.set_title("Where the time goes")
    fig.legend(loc="outside lower center", ncols=3, frameon=False)
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    return fig


# (file name, heading, caption, builder)
FIGURES: tuple[tuple[str, str, str, FigureFn], ...] = (
    (
        "validation_accuracy.png",
        "Validation accuracy",
        "Left: accuracy against the rollouts spent (the budget that dynamic allocation saves); "
        "right: against training steps.",
        _fig_validation,
    ),
    (
        "entropy_temperature.png",
        "Entropy and temperature",
        "Token-mean entropy of the on-policy batch (dashed: the controller's target) and the "
        "sampling temperature.",
        _fig_entropy_temperature,
    ),
    (
        "group_outcomes.png",
        "Groups without learning signal",
        "Share of prompt groups whose rollouts were all wrong or all correct (zero GRPO "
        "advantage).",
        _fig_group_outcomes,
    ),
    (
        "allocation.png",
        "Rollout allocation",
        "Rollouts per prompt in each batch: mean, and the min–max range.",
        _fig_allocation,
    ),
    (
        "allocation_hist.png",
        "Allocation histogram",
        "For each step, the share of the batch's prompts that received n rollouts.",
        _fig_allocation_hist,
    ),
    (
        "pass_at_k.png",
        "pass@k",
        "Unbiased pass@k from `eval.json` (Chen et al. 2021).",
        _fig_pass_at_k,
    ),
    (
        "training.png",
        "Training diagnostics",
        "Reward, loss, KL, clipping, gradients and tokens per step; a metric that is zero in every "
        "run (KL without a reference model) gets no panel.",
        _fig_training,
    ),
    ("time.png", "Time per step", "Mean wall-clock seconds per step by phase.", _fig_time),
)
