"""scripts/gpu_check.sh: the dry run, the summary it writes, and the checks of the verl run.

The GPU run itself cannot run here; these tests check what it is built from against hand-made
phase records, verl log rows and the controller rule written out by hand.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


G = _load("gpu_check")
T = _load("gpu_check_tasks")


def _rec(status: str, result: dict | None = None) -> dict:
    return {"status": status, "seconds": 1.0, "budget_s": 10, "reason": "", "result": result or {}}


def _all(status: str = "passed") -> dict:
    phases = {p.name: _rec(status) for p in G.PLAN}
    phases["trl"] = _rec("skipped")
    return phases


def test_dry_run_prints_the_plan_and_passes(tmp_path):
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for p in G.PLAN:  # every phase with its budget
        assert f"{p.name:<18} {p.budget_s:>4} s" in out.stdout
    assert "e3rl section of the verl run: allocator=rank, temperature=entropy" in out.stdout
    assert "dry run: all prerequisites pass" in out.stdout
    assert not (tmp_path / "summary.json").exists()  # a dry run writes no results


def test_summary_has_the_documented_keys_and_timings():
    phases = _all()
    phases["e3rl_train"] = _rec("passed", {"hf": {"step_s": 2.0}, "vllm": {"step_s": 1.0}})
    phases["verl_e2e"] = _rec("passed", {"ok": True, "steps": [1, 2, 3]})
    s = G.build_summary(phases, "NVIDIA H200", {"python": "3.12"}, "t0", 100.0, 560, True)
    assert tuple(s) == G.SUMMARY_KEYS
    for key in ("device", "verl_e2e", "vllm", "timings"):  # the keys the issue asks for
        assert key in s
    assert s["device"] == "NVIDIA H200"
    assert s["verl_e2e"] == {"status": "passed", "ok": True, "steps": [1, 2, 3]}
    assert s["vllm"]["engine_tests"]["status"] == "passed"
    assert s["timings"]["e3rl_engines"] == {"hf": {"step_s": 2.0}, "vllm": {"step_s": 1.0}}
    assert s["timings"]["install_vllm_s"] == 1.0
    assert s["exit_code"] == 0
    json.dumps(s)  # serialisable as written


def test_exit_code_failed_beats_unavailable_and_optional_skip_counts_as_done():
    assert G.exit_code(_all()) == 0
    p = _all()
    p["verl_e2e"] = _rec("unavailable")
    assert G.exit_code(p) == 2
    p["vllm_engine_tests"] = _rec("timeout")
    assert G.exit_code(p) == 1
    p = _all()
    del p["e3rl_train"]  # never recorded: the run is incomplete
    assert G.exit_code(p) == 2
    p = _all()
    p["trl"] = _rec("unavailable")  # optional
    assert G.exit_code(p) == 0


def test_unknown_status_is_rejected_with_the_phase_named():
    p = _all()
    p["probe"] = _rec("ok")
    with pytest.raises(ValueError, match="phase probe: status 'ok'"):
        G.build_summary(p, None, {}, "t0", 1.0, 560, False)


def test_summary_is_written_after_each_phase_and_copied_to_out(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))
    r = G.Runner(tmp_path / "work", tmp_path / "results", 560)
    r.logs.mkdir(parents=True)
    (r.logs / "probe.log").write_text("gpu found\n")
    r.record("probe", "passed", 2.0)
    first = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert first["finished"] is False and list(first["phases"]) == ["probe"]
    r.record("install_vllm", "failed", 3.0, "exit status 1")
    s = json.loads((out / "summary.json").read_text())
    assert s["phases"]["install_vllm"]["reason"] == "exit status 1"
    with tarfile.open(out / "gpu_logs.tar.gz") as tar:
        assert "logs/probe.log" in tar.getnames()


def test_phases_that_need_a_failed_phase_are_skipped(tmp_path):
    r = G.Runner(tmp_path / "work", tmp_path / "results", 560)
    r.record("install_vllm", "failed", 3.0)
    r.record("install_verl", "failed", 3.0)
    r.run_phases(("prepare_model",))
    assert r.phases["prepare_model"]["status"] == "skipped"
    assert r.phases["prepare_model"]["reason"] == "needs one of install_verl, install_vllm"
    r.record("prepare_model", "passed", 3.0)
    r.run_phases(("e3rl_train",))
    assert r.phases["e3rl_train"]["reason"] == "needs install_vllm (failed)"


def test_a_phase_is_killed_at_its_budget(tmp_path, monkeypatch):
    r = G.Runner(tmp_path / "work", tmp_path / "results", 560)
    monkeypatch.setattr(G, "PLAN", [G.Phase("probe", 1, "sleeps")])
    job = r.start("probe", [["sleep", "30"]])
    r.finish(job)
    assert r.phases["probe"]["status"] == "timeout"
    assert r.phases["probe"]["seconds"] < 15


def test_a_failing_phase_keeps_its_log_tail_and_result(tmp_path, monkeypatch):
    r = G.Runner(tmp_path / "work", tmp_path / "results", 560)
    r.work.mkdir(parents=True)
    monkeypatch.setattr(G, "PLAN", [G.Phase("probe", 30, "fails")])
    (r.work / "probe.json").write_text('{"ok": false, "errors": ["x"], "n": 3}')
    r.finish(r.start("probe", [["bash", "-c", "echo boom; exit 3"]]))
    rec = r.phases["probe"]
    assert rec["status"] == "failed" and rec["reason"] == "exit status 3"
    assert rec["result"]["n"] == 3 and rec["result"]["log_tail"].endswith("boom\n")


def test_without_index_or_wheelhouse_the_installs_are_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "index_reachable", lambda *a, **k: False)
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(tmp_path / "none"))
    src, where = G.install_source()
    assert src is None and "no wheelhouse" in where
    (tmp_path / "whl").mkdir()
    (tmp_path / "whl" / "a-1.0-py3-none-any.whl").write_bytes(b"")
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(tmp_path / "whl"))
    src, _ = G.install_source()
    assert src == ["--no-index", "--find-links", str(tmp_path / "whl")]


def test_parse_junit_counts_and_names_failures(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase name="a"/><testcase name="b"><failure message="x"/></testcase>'
        '<testcase name="c"><skipped/></testcase></testsuite></testsuites>'
    )
    assert G.parse_junit(xml) == {
        "pytest": {"tests": 3, "failures": 1, "errors": 0, "skipped": 1},
        "failing": ["b"],
    }


# ---------------------------------------------------------------- the verl run's checks

V = 49152
SCALE = math.log(V) + math.log(math.log(V))  # ln|V| + ln ln|V| = 13.1826...


def _verl_rows(temps, nexts, entropy=1.0, target=1.2, alloc=((4, 4), (2, 6), (3, 5))):
    rows = []
    for s, (t, nt, (lo, hi)) in enumerate(zip(temps, nexts, alloc, strict=True), start=1):
        rows.append(
            {
                "step": s,
                "data": {
                    "e3rl/rollouts": 16.0,
                    "e3rl/alloc/min": float(lo),
                    "e3rl/alloc/mean": 4.0,
                    "e3rl/alloc/max": float(hi),
                    "e3rl/temperature": t,
                    "e3rl/next_temperature": nt,
                    "e3rl/entropy": entropy,
                    "e3rl/target_entropy": math.nan if s == 1 else target,
                },
            }
        )
    return rows


def _rollouts(groups_per_step):
    return {
        s: [{"uid": f"u{k}_{i}_0"} for k, c in enumerate(groups) for i in range(c)]
        for s, groups in groups_per_step.items()
    }


STATE = {"tracker": {"ids": list("abcd"), "rollouts": [12, 12, 12, 12], "successes": [1, 2, 3, 4]}}


def test_verl_findings_accept_a_run_that_follows_the_rules():
    t2 = 1.0 * (1 + 1.0 * math.log(1.2 / 1.0) / SCALE)  # 1.013831...
    t3 = t2 * (1 + t2 * math.log(1.2 / 1.0) / SCALE)
    assert abs(t2 - 1.0138307) < 1e-6
    rows = _verl_rows([1.0, 1.0, t2], [1.0, t2, t3])
    rollouts = _rollouts({1: [4, 4, 4, 4], 2: [2, 6, 4, 4], 3: [3, 5, 4, 4]})
    out = T.verl_findings(rows, STATE, rollouts, V)
    assert out["ok"], out["errors"]
    assert out["tracker"] == {"prompts": 4, "rollouts": 48, "successes": 10, "epochs": None}
    assert out["steps"][1]["generated_groups"] == [2, 4, 4, 6]


def test_verl_findings_name_each_broken_rule():
    t2 = 1.0 * (1 + math.log(1.2) / SCALE)
    rows = _verl_rows([1.0, 1.0, 1.0], [1.0, t2 + 0.01, 1.0])  # step 3 ignores step 2's choice
    rows[1]["data"]["e3rl/rollouts"] = 15.0
    rollouts = _rollouts({1: [4, 4, 4, 4], 2: [2, 6, 4, 4], 3: [4, 4, 4, 4]})
    state = {"tracker": {**STATE["tracker"], "rollouts": [12, 12, 12, 11]}}
    errors = T.verl_findings(rows, state, rollouts, V)["errors"]
    text = "\n".join(errors)
    assert "step 2: 15.0 rollouts, budget n*batch = 16" in text
    assert "step 3 sampled at 1.0, step 2 chose" in text
    assert "step 2: next temperature" in text and "the rule gives 1.0138" in text
    assert "step 3: verl generated groups [4, 4, 4, 4], e3rl allocated min 3.0 max 5.0" in text
    assert "tracker counted 47 rollouts, the run made 48" in text


def test_verl_findings_require_three_steps_and_the_state_file():
    rows = _verl_rows([1.0, 1.0], [1.0, 1.0], alloc=((4, 4), (4, 4)))
    out = T.verl_findings(rows, None, {}, V)
    assert "e3rl metrics for steps [1, 2], expected 1..3" in out["errors"]
    assert "no e3rl_state.json next to the last checkpoint" in out["errors"]


def test_reward_function_is_the_numeric_check():
    assert T.compute_score("e3rl/arith", "so 3+4 = \\boxed{7}", "7") == 1.0
    assert T.compute_score("e3rl/arith", "it is 8", 7) == 0.0


def test_engine_timings_are_medians_after_warm_up():
    rows = [
        {"time_generate": g, "time_reward": 0.1, "time_update": u, "tokens": 1000, "rollouts": 8}
        for g, u in [(9.0, 9.0), (9.0, 9.0), (1.0, 0.5), (2.0, 0.4), (4.0, 0.6)]
    ]
    t = T.engine_timings(rows)  # warm-up rows (9 s) dropped
    assert t["steps"] == 5
    assert t["generate_s"] == 2.0 and t["update_s"] == 0.5
    assert t["step_s"] == pytest.approx(2.5)  # medians of 1.6, 2.5, 4.7
    assert t["rollout_tokens_per_s"] == 500.0  # 1000 / 2.0
