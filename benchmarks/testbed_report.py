"""What benchmarks/testbed.py writes for people: summary.md, the figure, candidates.md."""

from __future__ import annotations

import json
from pathlib import Path

import arms
import testbed_stats as S


def _num(v: float | None) -> str:
    return "— (not measurable)" if v is None else f"{v:.3f}"


def _fmt(stat: dict | None, fmt: str = ".3f") -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    lo, hi = stat["ci95"]
    return f"{format(stat['mean'], fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"


def to_markdown(s: dict) -> str:
    """summary.md: the testbed, a table per arm (mean [95 % CI] over seeds), the verdicts."""
    tb = s["testbed"]
    ks = [k for k in s["base_pass_at_k"] if k.isdigit()]
    big = [k for k in ("1", "16", ks[-1] if ks else "") if k in ks]
    lines = [
        f"# Testbed `{tb['name']}`: the method's arms against uniform GRPO",
        "",
        f"Model parameters {tb['model_params']}; {tb['step_seconds']:.2f} s a step (median, "
        f"{tb.get('step_seconds_how', 'from runs that shared the cores')}); "
        f"base pass-rate spread {json.dumps({k: round(v, 3) for k, v in tb['base_pass_rate_spread'].items()})}; "  # noqa: E501
        f"uniform's late-gain share {_num(tb['uniform_late_gain_share'])}; uniform's T=1 entropy "
        f"drop {tb['uniform_entropy_drop']['drop']:.3f}; uniform's pass@k minus base "
        f"{json.dumps({k: round(v, 3) for k, v in tb['uniform_passk_minus_base'].items()})}; "
        f"properties {json.dumps(tb['properties'])} (from {tb['source']}).",
        "",
        "Records made at commit(s) "
        + (", ".join(c[:7] for c in s.get("commits", [])) or "unknown")
        + ".",
        "",
        "Mean [95 % bootstrap interval over seeds]. 'Final' = mean of the last "
        f"{s['settings']['smooth_points']} validation points; rollouts are paired with the same "
        "seed's uniform run and censored at the run's total when never reached. Budget ok: "
        "every step spent exactly its budget (an arm with budget.skip_below: at most it).",
        "",
    ]
    head = [
        "arm",
        "seeds",
        "final acc",
        "AUC",
        "rollouts to uniform final / uniform total",
        "censored",
        "to 90 % of uniform gain / total",
        "rollouts in all-wrong",
        "in mixed",
        "entropy: 10-step |H/H*-1|",
        *(f"pass@{k}" for k in big),
        "budget ok",
    ]
    rows = [head, ["---"] * len(head)]
    bp = s["base_pass_at_k"]
    rows.append(
        [
            "base model",
            "–",
            f"{bp['greedy']:.3f} (greedy)",
            *["–"] * 7,
            *(f"{bp[k]:.3f}" for k in big),
            "–",
        ]
    )
    for arm, a in s["arms"].items():
        to_final = a["rollouts_to_uniform_final_ratio"]
        rows.append(
            [
                arm,
                str(len(a["seeds"])),
                _fmt(a["smoothed_final_acc"]),
                _fmt(a["auc"]),
                _fmt(to_final, ".2f"),
                str(to_final["censored"]),
                _fmt(a["rollouts_to_90pct_uniform_gain_ratio"], ".2f"),
                _fmt(a["group_shares"]["all_wrong"], ".2f"),
                _fmt(a["group_shares"]["mixed"], ".2f"),
                _fmt(a["entropy_rolling10_abs_dev"], ".3f"),
                *(_fmt(a["pass_at_k"].get(k)) for k in big),
                "yes" if a["budget_ok"] else "**NO**",
            ]
        )
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += final_temperature_lines(s, big)
    lines += ["", "## Verdicts", ""] + verdict_lines(s["claims"])
    return "\n".join(lines) + "\n"


def final_temperature_lines(s: dict, big: list[str]) -> list[str]:
    """pass@k of the arms whose runs end sampling off T = 1, at that temperature."""
    out = []
    for arm, a in s["arms"].items():
        at = a.get("pass_at_k_final_temperature")
        if at:
            ks = ", ".join(
                f"pass@{k} {_fmt(at['pass_at_k'][k])}" for k in big if k in at["pass_at_k"]
            )
            out.append(
                f"- {arm} (seeds {', '.join(map(str, at['seeds']))}) at its final sampling "
                f"temperature {_fmt(at['temperature'], '.2f')}: {ks}"
            )
    if out:
        out = [
            "",
            "pass@k at the temperature each run ended sampling at (the table: T = 1):",
            "",
        ] + out
    return out


def verdict_lines(claims: dict) -> list[str]:
    out = []
    for arm, c in claims["rollout_saving_vs_uniform"].items():
        out.append(
            f"- rollout saving, {arm}: ratio {_fmt(c['ratio'], '.3f')} (n {c['ratio']['n']}, "
            f"censored {c['ratio']['censored']}) against the claimed {c['target']}: "
            f"**{c['verdict']}**; any saving (ratio < 1): {c['saving_verdict']}; over "
            f"uniform's own rollouts to its final {_fmt(c['ratio_vs_uniform_reach'], '.3f')}: "
            f"{c['verdict_vs_uniform_reach']}"
        )
    for arm, c in claims["passk_vs_base"].items():
        line = (
            f"- pass@{c['k']}, {arm}: minus base {_fmt(c['minus_base'])}: "
            f"**{c['verdict_vs_base']}**"
        )
        if "minus_uniform" in c:
            line += f"; minus uniform {_fmt(c['minus_uniform'])}: **{c['verdict_vs_uniform']}**"
        out.append(line)
    for arm, c in claims["entropy_held"].items():
        out.append(
            f"- entropy held, {arm}: 10-step mean |H/H*-1| {_fmt(c['abs_dev'])} "
            f"(tolerance {c['tolerance']}): **{c['verdict']}**"
        )
    return out


def plot(records: list[dict], summary: dict, path: Path) -> None:
    """arms.plot_suite's figure: accuracy against rollouts with seed bands, pass@k against the
    base, the share of rollouts in mixed groups, entropy against its target."""
    ks = [k for k in summary["base_pass_at_k"] if k.isdigit()]
    view = {
        "arms": {
            arm: {
                "pass_at_k": {
                    k: [
                        r["pass_at_k"][k]
                        for r in records
                        if r["arm"] == arm and k in r["pass_at_k"]
                    ]
                    for k in ks
                }
            }
            for arm in summary["arms"]
        },
        "target_accuracy": summary["arms"]["uniform"]["smoothed_final_acc"]["mean"],
        "base_pass_at_k": summary["base_pass_at_k"],
    }
    arms.plot_suite(records, view, path)


def candidates_table(candidates: Path) -> str:
    """One row per measured candidate (rejected ones too), pass/fail per property."""
    mark = {True: "pass", False: "**fail**"}
    head = (
        "| testbed | params | steps x seeds | below 0.1 / above 0.9 / between | late-gain share | "
        "T=1 entropy drop | pass@16 / @32 minus base | s/step (threads) | spread | long curve | "
        "collapse | cheap |"
    )
    lines = [
        "Properties of candidate testbeds under uniform GRPO (benchmarks/testbed.py --candidate). "
        f"Thresholds: below 0.1 >= {S.SPREAD_BELOW_MIN}, above 0.9 >= {S.SPREAD_ABOVE_MIN}, "
        f"between >= {S.SPREAD_BETWEEN_MIN}; late-gain share >= {S.LATE_GAIN_SHARE_MIN:.3f}; "
        f"T=1 entropy drop >= {S.ENTROPY_DROP_MIN} and pass@16 or @32 below the base's; "
        f"<= {S.STEP_SECONDS_MAX} s a step.",
        "",
        head,
        "|" + " --- |" * 12,
    ]
    for f in sorted(candidates.glob("*.json")):
        c = json.loads(f.read_text())
        sp, pk, p = c["base_pass_rate_spread"], c["uniform_passk_minus_base"], c["properties"]
        late = c["uniform_late_gain_share"]
        lines.append(
            f"| {c['name']} | {c['model_params']} | {c['steps']} x {len(c['seeds'])} | "
            f"{sp['below_0.1']:.2f} / {sp['above_0.9']:.2f} / {sp['between']:.2f} | "
            f"{'—' if late is None else f'{late:.2f}'} | "
            f"{c['uniform_entropy_drop']['drop']:.2f} | "
            f"{' / '.join(f'{pk[k]:+.3f}' for k in pk) or '—'} | "
            f"{c['step_seconds']:.2f} ({c['threads']}) | "
            + " | ".join(mark[p[k]] for k in ("spread", "long_curve", "collapse", "cheap"))
            + " |"
        )
    return "\n".join(lines) + "\n"
