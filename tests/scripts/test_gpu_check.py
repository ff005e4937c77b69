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


W = _load("gpu_check_wheels")  # before gpu_check, which imports it
G = _load("gpu_check")
T = _load("gpu_check_tasks")


def _rec(status: str, result: dict | None = None) -> dict:
    return {"status": status, "seconds": 1.0, "budget_s": 10, "reason": "", "result": result or {}}


def _all(status: str = "passed") -> dict:
    phases = {p.name: _rec(status) for p in G.PLAN}
    phases["trl"] = _rec("skipped")
    return phases


def test_dry_run_prints_the_plan_and_passes(tmp_path):
    env = {
        **os.environ,
        "GPU_CHECK_PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        "E3RL_WHEELHOUSE": str(tmp_path / "no-wheels"),  # none: a warning, not a failure
    }
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
    assert "cuda_train overrides: configs/demo.yaml + overrides load (fp32-lean," in out.stdout
    # the cuda_train phase's own command ran on CPU, one step of each variant
    assert (
        "[ok] cuda_train smoke (cpu, 3 steps, 4 variants): 4 variants ran and passed" in out.stdout
    )
    assert (
        "[ok] cuda_scale smoke (cpu, 2 layers, 4 variants): 4 variants ran and passed" in out.stdout
    )
    smoke = json.loads((tmp_path / "dry-cuda.json").read_text())
    assert smoke["ok"] and set(smoke["variants"]) == {n for n, _, _ in T.CUDA_VARIANTS}
    for v in smoke["variants"].values():
        assert v["steps"] == 3 and v["rollouts_per_step"] == 4
        assert set(v["logprob_gap"]) == {str(t) for t in T.LOGPROB_TEMPERATURES}
    assert "[warn] wheelhouse: no .whl/" in out.stdout
    assert "[ok] carry size: working tree" in out.stdout
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
    monkeypatch.setattr(W, "index_reachable", lambda *a, **k: False)
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(tmp_path / "none"))
    src, where = W.install_source()
    assert src is None and "no wheelhouse" in where
    (tmp_path / "whl").mkdir()
    (tmp_path / "whl" / "vllm-0.24.0-cp38-abi3-manylinux_2_31_x86_64.whl").write_bytes(b"")
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(tmp_path / "whl"))
    src, _ = W.install_source()
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


# ---------------------------------------------------------------- phases that need no vLLM


def _wheels(d: Path, *names: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"x" * 100)
    return d


MATH_WHEELS = (
    "math_verify-0.9.0-py3-none-any.whl",
    "latex2sympy2_extended-1.11.0-py3-none-any.whl",
    "antlr4_python3_runtime-4.13.2-py3-none-any.whl",
)


def test_the_pins_are_e3rls_missing_deps_and_the_test_files_exist():
    assert W.wheel_pins() == [
        ("math-verify", "0.9.0"),
        ("latex2sympy2-extended", "1.11.0"),
        ("antlr4-python3-runtime", "4.13.2"),
    ]
    assert "math-verify>=0.7" in (REPO / "pyproject.toml").read_text()  # the pin satisfies it
    for f in G.CUDA_TESTS + G.CORE_TESTS:
        assert (REPO / f).is_file(), f


def test_a_bad_pin_line_is_named(tmp_path):
    (tmp_path / "pins.txt").write_text("# ok\nmath-verify>=0.9\n")
    with pytest.raises(ValueError, match=r"pins.txt:2: 'math-verify>=0.9' is not NAME==VERSION"):
        W.wheel_pins(tmp_path / "pins.txt")


def test_wheel_report_names_missing_doubled_and_extra_wheels(tmp_path):
    wh = _wheels(
        tmp_path / "whl",
        "math_verify-0.9.0-py3-none-any.whl",
        "math_verify-0.8.0-py3-none-any.whl",
        "Latex2Sympy2_Extended-1.11.0-py3-none-any.whl",
        "gguf-0.17.1-py3-none-any.whl",
    )
    rep = W.wheel_report(wh)
    assert rep["missing"] == ["antlr4-python3-runtime==4.13.2"]
    assert rep["twice"] == ["math-verify"]
    assert rep["extra"] == ["gguf"]
    assert rep["bytes"] == 400


def test_a_wheelhouse_without_vllm_is_no_source_for_the_vllm_installs(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "index_reachable", lambda *a, **k: False)
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(_wheels(tmp_path / "whl", *MATH_WHEELS)))
    src, why = W.install_source(("vllm",))
    assert src is None and "holds no vllm wheel" in why and "64 MiB" in why
    _wheels(tmp_path / "whl", "vllm-0.24.0-cp38-abi3-manylinux_2_31_x86_64.whl")
    assert W.install_source(("vllm",))[0] == ["--no-index", "--find-links", str(tmp_path / "whl")]
    assert W.install_source(("verl", "vllm", "ray"))[0] is None


def test_wheel_install_uses_the_device_readme_line(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "index_reachable", lambda *a, **k: False)
    res = tmp_path / "r.json"
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(_wheels(tmp_path / "whl", *MATH_WHEELS)))
    (pip, check), _ = W.wheel_install_commands(["math_verify"], res)
    for flag in ("--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"):
        assert flag in pip
    assert pip[pip.index("--target") + 1] == str(W.SITE)
    assert sorted(Path(a).name for a in pip if a.endswith(".whl")) == sorted(MATH_WHEELS)
    assert check[-3:] == ["imports", "--result", str(res)]
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(tmp_path / "none"))
    assert W.wheel_install_commands([], res)[0] == [check]  # nothing missing: only the check
    cmds, why = W.wheel_install_commands(["math_verify"], res)
    assert cmds is None and "math_verify not installed, no wheelhouse" in why


def test_outcome_separates_failed_from_what_the_environment_stopped():
    p = {n: _rec("passed") for n in ("probe", "install_wheels", "cuda_train")}
    p["cuda_pytest"] = _rec("failed")
    p["install_vllm"] = _rec("unavailable")
    p["install_vllm"]["reason"] = "no package index"
    p["install_verl"] = _rec("unavailable")
    p["prepare_model"] = {**_rec("skipped"), "blocked_by": ["install_verl", "install_vllm"]}
    p["vllm_engine_tests"] = {**_rec("skipped"), "blocked_by": ["install_vllm"]}
    p["verl_e2e"] = {**_rec("skipped"), "blocked_by": ["install_verl"]}
    p["e3rl_train"] = {**_rec("skipped"), "blocked_by": ["install_vllm"]}
    p["trl"] = _rec("skipped")
    out = G.outcome(p)
    assert out["passed"] == ["probe", "install_wheels", "cuda_train"]
    assert out["failed"] == ["cuda_pytest"]
    assert list(out["unavailable_environment"]) == [
        "install_vllm", "install_verl", "prepare_model", "vllm_engine_tests", "verl_e2e",
        "e3rl_train",
    ]  # fmt: skip
    assert out["unavailable_environment"]["install_vllm"] == "no package index"
    assert out["skipped"] == {"trl": ""} and out["skipped_after_failure"] == {}
    assert G.exit_code(p) == 1
    p["cuda_pytest"] = _rec("passed")
    assert G.exit_code(p) == 2  # nothing failed, but the vLLM phases could not run
    p["install_vllm"] = _rec("failed")  # a failed install: what needed it is not environment
    out = G.outcome(p)
    # prepare_model needed either install: one failed, so it counts as stopped by a failure
    assert list(out["skipped_after_failure"]) == [
        "prepare_model",
        "vllm_engine_tests",
        "e3rl_train",
    ]
    assert list(out["unavailable_environment"]) == ["install_verl", "verl_e2e"]


def test_without_a_gpu_everything_is_unavailable_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(G, "nvidia_smi", lambda: None)
    monkeypatch.setattr(G, "_torch_facts", lambda: {"cuda_available": False})
    monkeypatch.setattr(W, "index_reachable", lambda *a, **k: False)
    r = G.Runner(tmp_path / "work", tmp_path / "results", 560)
    assert r.run() == 2
    s = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert s["outcome"]["passed"] == [] and s["outcome"]["failed"] == []
    assert list(s["outcome"]["unavailable_environment"]) == [p.name for p in G.PLAN]
    assert s["outcome"]["unavailable_environment"]["probe"] == "no usable GPU here"


def test_a_gpu_machine_without_vllm_runs_the_cuda_phases_first(tmp_path, monkeypatch):
    """The lent machines: a GPU, no index, a wheelhouse of e3rl's deps only. The phases that need
    no vLLM run (stand-in commands here), in order; the vLLM ones are unavailable; exit 2."""
    monkeypatch.setattr(G, "nvidia_smi", lambda: {"name": "NVIDIA H200"})
    monkeypatch.setattr(G, "_torch_facts", lambda: {"cuda_available": True})
    monkeypatch.setattr(W, "index_reachable", lambda *a, **k: False)
    monkeypatch.setenv("E3RL_WHEELHOUSE", str(_wheels(tmp_path / "whl", *MATH_WHEELS)))
    ran = []
    real = G.Runner.commands

    def commands(self, name):
        if name in ("install_wheels", "cuda_train", "cuda_pytest", "cuda_scale"):
            ran.append(name)
            (self.work / f"{name}.json").write_text('{"ok": true, "errors": [], "n": 1}')
            return [["true"]], {}, None
        return real(self, name)

    monkeypatch.setattr(G.Runner, "commands", commands)
    r = G.Runner(tmp_path / "work", tmp_path / "results", 560)
    assert r.run() == 2
    assert ran == ["install_wheels", "cuda_train", "cuda_pytest", "cuda_scale"]
    s = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert s["outcome"]["passed"] == [
        "probe", "install_wheels", "cuda_train", "cuda_pytest", "cuda_scale"
    ]  # fmt: skip
    env = s["outcome"]["unavailable_environment"]
    assert "holds no vllm wheel" in env["install_vllm"]
    assert set(env) == {"install_vllm", "install_verl", "prepare_model", "vllm_engine_tests",
                        "verl_e2e", "e3rl_train"}  # fmt: skip
    assert s["cuda"]["train"] == {"status": "passed", "ok": True, "errors": [], "n": 1}
    assert s["environment"]["wheelhouse"]["missing"] == []


def _case(cls: str, name: str, outcome: str) -> dict:
    return {"classname": cls, "name": name, "outcome": outcome}


def test_cuda_pytest_fails_when_cuda_tests_skip_or_none_ran():
    ran = G.cuda_pytest_findings(
        {
            "pytest": {},
            "cases": [
                _case("tests.rollout.test_hf_cuda", "a", "passed"),
                _case("tests.test_update", "b", "passed"),
            ],
        }  # fmt: skip
    )
    assert "ok" not in ran and ran["cuda_tests"] == {"ran": 1, "skipped": 0}
    skipped = G.cuda_pytest_findings(
        {"cases": [_case("tests.test_trainer_cuda", "t[fp32]", "skipped")]}
    )
    assert skipped["ok"] is False
    assert skipped["errors"] == ["CUDA tests skipped on the GPU machine: ['t[fp32]']"]
    none = G.cuda_pytest_findings({"cases": [_case("tests.test_update", "b", "passed")]})
    assert none["ok"] is False and "no test of tests/rollout/test_hf_cuda.py" in none["errors"][0]


def test_parse_junit_cases_give_each_outcome(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.x" name="a"/>'
        '<testcase classname="tests.x" name="b"><failure message="x"/></testcase>'
        '<testcase classname="tests.y" name="c"><skipped/></testcase></testsuite></testsuites>'
    )
    assert [c["outcome"] for c in G.parse_junit(xml, cases=True)["cases"]] == [
        "passed", "failure", "skipped"
    ]  # fmt: skip


def test_gap_errors_hold_each_dtype_to_its_tolerance():
    fp32 = {"decode_path": "lean", "0.7": {"max": 5e-4, "mean": 1e-5}}
    assert T.gap_errors("v", "float32", True, fp32) == []
    fp32["1.6"] = {"max": 2e-3, "mean": 1e-5}
    assert T.gap_errors("v", "float32", True, fp32) == [
        "v: T=1.6: sampler vs training log-prob gap max 0.002 > 0.001"
    ]
    bf16 = {"decode_path": "transformers (rollout.lean_decode is off)",
            "1.0": {"max": 0.1, "mean": float("nan")}}  # fmt: skip
    errs = T.gap_errors("w", "bfloat16", True, bf16)
    assert errs[0].startswith("w: decode path 'transformers") and "configured lean" in errs[0]
    assert errs[1] == "w: T=1.0: sampler vs training log-prob gap mean nan > 0.02"


def test_temperature_findings_check_the_rule_and_movement():
    vocab = 100
    scale = math.log(vocab) + math.log(math.log(vocab))
    t3 = 1.0 * (1 + 1.0 * math.log(1.2 / 1.0) / scale)  # step 2's entropy 1.0 below target 1.2
    rows = [
        {"step": 1, "temperature": 1.0, "next_temperature": 1.0, "entropy": 1.2,
         "target_entropy": None},
        {"step": 2, "temperature": 1.0, "next_temperature": t3, "entropy": 1.0,
         "target_entropy": 1.2},
        {"step": 3, "temperature": t3, "next_temperature": t3, "entropy": 1.2,
         "target_entropy": 1.2},
    ]  # fmt: skip
    temps, errors = T.temperature_findings("v", rows, vocab)
    assert errors == [] and temps == [1.0, 1.0, t3]
    flat = [dict(r, temperature=1.0, next_temperature=1.0, entropy=1.2) for r in rows]
    _, errors = T.temperature_findings("v", flat, vocab)
    assert errors == ["v: the temperature never moved from 1.0 in 3 steps"]
    rows[2]["temperature"] = 1.0
    _, errors = T.temperature_findings("v", rows, vocab)
    assert errors[0].startswith("v: step 3 sampled at 1.0, step 2 chose 1.0")


def test_cuda_overrides_configure_each_variant():
    from e3rl.config_io import load_config

    for name, dtype, lean in T.CUDA_VARIANTS:
        for smoke in (False, True):
            cfg = load_config(
                REPO / "configs" / "demo.yaml",
                T.cuda_overrides(dtype, lean, "/tmp/x", "cpu" if smoke else "cuda", smoke),
            )
            assert cfg.model.path == "tiny" and cfg.rollout.engine == "hf", name
            assert (cfg.model.dtype, cfg.rollout.lean_decode) == (dtype, lean)
            assert cfg.rollout.temperature_control == "entropy"
            assert cfg.temperature.warmup_steps == 1
            assert cfg.trainer.total_steps == (3 if smoke else T.CUDA_STEPS)
            assert cfg.model.warm_start.steps == (0 if smoke else 100)
