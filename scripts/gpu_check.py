"""The GPU check of e3rl: one run of at most ~10 minutes on one GPU (see docs/gpu_check.md).

    bash scripts/gpu_check.sh --dry-run     # any machine: the plan, prerequisites, exit 0 if all pass
    bash scripts/gpu_check.sh               # a GPU machine: installs, checks, benchmarks
    python3 scripts/gpu_check.py --wheel-report   # .whl/ against scripts/gpu_wheels.txt, sizes

Standard library only: it runs with the machine's own python3 before anything is installed.
First what needs no vLLM (the phases most likely to run on the lent machines, which reach no
package index): e3rl's missing base dependencies from the wheelhouse .whl/ into /tmp/site, e3rl's
trainer with the tiny model on CUDA, a pytest subset with CUDA tests. Then, where vLLM and verl
can be installed (an index, or a wheelhouse holding them), two virtual environments on top of the
machine's torch: `venv-vllm` (vLLM for e3rl's engine) and `venv-verl` (verl 0.9.1 with the vLLM
it pins), through scripts/gpu_check_tasks.py. Results: benchmarks/results/gpu/summary.json
(rewritten after every phase, so a run cut short still leaves what it measured; its `outcome`
separates passed, failed and unavailable-for-the-environment) and benchmarks/results/gpu/logs/;
when $OUT is set (the device tool) a copy of the summary and a tarball of the logs go there too.

Exit status: 0 every phase passed; 1 a phase failed or ran out of its time; 2 nothing failed but
a phase could not run (no GPU, no package index and no wheelhouse, time budget spent).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_check_wheels import (  # the wheels and installs of the phases
    SITE,
    TASKS,
    VERL_TRANSFORMERS,
    VERL_VERSION,
    VLLM_VERSION,
    install_commands,
    install_source,
    verl_packages,
    vllm_packages,
    wheel_install_commands,
    wheel_report,
)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "gpu"
CARRY_LIMIT_MIB = 64  # what one device call carries: working tree + carried paths
# The pytest subset of cuda_pytest: the CUDA-only tests, then the rollout/update core files, which
# run on CPU there (against the image's torch 2.11 and transformers 5.17, not this machine's).
CUDA_TESTS = ["tests/rollout/test_hf_cuda.py", "tests/test_trainer_cuda.py"]
CORE_TESTS = [
    "tests/rollout/test_hf.py",
    "tests/rollout/test_lean_decode.py",
    "tests/train/test_update.py",
]

# e3rl's base dependencies (pyproject), as modules: what install_wheels must make importable
E3RL_MODULES = [
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("tokenizers", "tokenizers"),
    ("safetensors", "safetensors"),
    ("numpy", "numpy"),
    ("pyarrow", "pyarrow"),
    ("yaml", "pyyaml"),
    ("rich", "rich"),
    ("math_verify", "math-verify"),
]
VENV_DISK_GIB = 20  # two venvs with vLLM (~6 GB each, torch shared), models, pip cache

STATUSES = ("passed", "failed", "timeout", "unavailable", "skipped")
OUTCOMES = ("passed", "failed", "unavailable_environment", "skipped_after_failure", "skipped")
SUMMARY_KEYS = (
    "device",
    "started_at",
    "finished",
    "exit_code",
    "elapsed_s",
    "budget_s",
    "outcome",
    "environment",
    "phases",
    "cuda",
    "verl_e2e",
    "vllm",
    "timings",
)


@dataclass
class Phase:
    """One step of the plan. `budget_s` is its time limit (cut to what the run has left)."""

    name: str
    budget_s: int
    what: str
    needs: list[str] = field(default_factory=list)
    needs_any: list[str] = field(default_factory=list)  # at least one of these must have passed
    optional: bool = False  # a skip of an optional phase does not make the run incomplete


PLAN: list[Phase] = [
    Phase("probe", 20, "GPU (nvidia-smi, torch.cuda), python, disk, package index or wheelhouse"),
    Phase(
        "install_wheels",
        90,
        "e3rl's base deps the image lacks (scripts/gpu_wheels.txt: math-verify, ...) from .whl/"
        " into /tmp/site (--no-index --no-deps), then e3rl imports from the checkout",
    ),
    Phase(
        "cuda_train",
        200,
        "e3rl train, tiny model (100-step warm start), hf engine on CUDA: fp32/bf16 x lean decode"
        " on/off, 6 steps each: runs, budget, sampler vs training log-probs at the sampling"
        " temperature, temperature control rule and movement; step time, tokens/s, peak memory",
    ),
    Phase(
        "cuda_pytest",
        150,
        "pytest " + " ".join(CUDA_TESTS + CORE_TESTS) + " (CUDA tests must not skip)",
    ),
    Phase(
        "cuda_scale",
        150,
        "a SmolLM2-135M-shaped model (random weights) on CUDA, fp32/bf16 x lean decode on/off:"
        " 16 prompts x 8 rollouts x 128 tokens, rollout tokens/s, one update's seconds, sampler"
        " vs update log-probs, peak memory",
    ),
    Phase(
        "install_vllm", 180, f"venv-vllm: vllm=={VLLM_VERSION} + e3rl's extras, wheels preferred"
    ),
    Phase(
        "install_verl",
        180,
        f"venv-verl: verl=={VERL_VERSION}, vllm=={VLLM_VERSION}, transformers=={VERL_TRANSFORMERS}"
        " (in parallel with install_vllm)",
    ),
    Phase(
        "prepare_model",
        90,
        "SmolLM2-135M-Instruct GGUF -> HF safetensors dir (for verl and vLLM), verl parquet data"
        " (saved with venv-verl's older transformers, which the newer one reads)",
        needs_any=["install_verl", "install_vllm"],
    ),
    Phase(
        "vllm_engine_tests",
        200,
        "pytest -m slow tests/rollout/test_vllm.py in venv-vllm (parallel with verl_e2e)",
        needs=["install_vllm"],
    ),
    Phase(
        "verl_e2e",
        240,
        "python -m e3rl.integrations.verl: 3 steps, SmolLM2, 1 GPU, vLLM rollout, rank allocation,"
        " temperature_control=entropy; checks counts, temperature, tracker",
        needs=["install_verl", "prepare_model"],
    ),
    Phase(
        "e3rl_train",
        150,
        "e3rl train SmolLM2 on GPU, rollout.engine=vllm then hf, 6 steps each (alone on the GPU):"
        " step time, rollout tokens/s, vLLM-policy log-prob gap",
        needs=["install_vllm", "prepare_model"],
    ),
    Phase(
        "trl",
        0,
        "TRL GRPOTrainer doing the same work: not implemented on GPU (benchmarks/trl_speed.py is"
        " CPU-only, use_cpu=True)",
        optional=True,
    ),
]
PARALLEL = [("install_vllm", "install_verl"), ("vllm_engine_tests", "verl_e2e")]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build_summary(
    phases: dict[str, dict[str, Any]],
    device: str | None,
    environment: dict[str, Any],
    started_at: str,
    elapsed_s: float,
    budget_s: float,
    finished: bool,
) -> dict[str, Any]:
    """summary.json from the phase records ({name: {status, seconds, budget_s, reason, result}})."""
    for name, rec in phases.items():
        if rec.get("status") not in STATUSES:
            raise ValueError(f"phase {name}: status {rec.get('status')!r} is not one of {STATUSES}")

    def result(name: str) -> dict[str, Any]:
        rec = phases.get(name, {})
        return {"status": rec.get("status", "not_run"), **(rec.get("result") or {})}

    train = result("e3rl_train")
    cuda = result("cuda_train")
    scale = result("cuda_scale")
    timings: dict[str, Any] = {f"{n}_s": r.get("seconds") for n, r in phases.items()}
    timings["e3rl_engines"] = {e: train.get(e) for e in ("hf", "vllm") if train.get(e)}
    timings["cuda_variants"] = {
        name: {k: v.get(k) for k in ("step_s", "rollout_tokens_per_s", "peak_gpu_mem_mib")}
        for name, v in (cuda.get("variants") or {}).items()
    }
    timings["cuda_scale"] = {
        name: {k: v.get(k) for k in ("rollout_tokens_per_s", "update_s", "peak_gpu_mem_mib")}
        for name, v in (scale.get("variants") or {}).items()
    }
    summary = {
        "device": device,
        "started_at": started_at,
        "finished": finished,
        "exit_code": exit_code(phases) if finished else None,
        "elapsed_s": round(elapsed_s, 1),
        "budget_s": budget_s,
        "outcome": outcome(phases),
        "environment": environment,
        "phases": phases,
        "cuda": {"train": cuda, "pytest": result("cuda_pytest"), "scale": scale},
        "verl_e2e": result("verl_e2e"),
        "vllm": {"engine_tests": result("vllm_engine_tests"), "train": train},
        "timings": timings,
    }
    assert tuple(summary) == SUMMARY_KEYS
    return summary


def outcome(phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The phases by what happened to them: passed, failed (or timed out), unavailable for the
    environment (no GPU, no package source: with the reason), skipped after a failure, skipped for
    another reason (time spent, not implemented). A phase skipped because the phases it needed
    were unavailable is unavailable too: the environment, not e3rl, stopped it."""
    out: dict[str, Any] = {k: ([] if k in ("passed", "failed") else {}) for k in OUTCOMES}
    order = [p.name for p in PLAN] + [n for n in phases if n not in {p.name for p in PLAN}]
    for name in order:
        rec = phases.get(name)
        if rec is None:
            continue
        st, reason = rec["status"], rec.get("reason", "")
        blockers = rec.get("blocked_by") or []
        if st == "passed":
            out["passed"].append(name)
        elif st in ("failed", "timeout"):
            out["failed"].append(name)
        elif st == "unavailable" or (
            blockers and all(b in out["unavailable_environment"] for b in blockers)
        ):
            out["unavailable_environment"][name] = reason
        elif any(b in out["failed"] or b in out["skipped_after_failure"] for b in blockers):
            out["skipped_after_failure"][name] = reason
        else:
            out["skipped"][name] = reason
    return out


def exit_code(phases: dict[str, dict[str, Any]]) -> int:
    """0 all required phases passed, 1 any failed or timed out, 2 some could not run."""
    optional = {p.name for p in PLAN if p.optional}
    statuses = [r["status"] for n, r in phases.items() if n not in optional]
    if any(s in ("failed", "timeout") for s in statuses):
        return 1
    missing = [p.name for p in PLAN if not p.optional and p.name not in phases]
    if missing or any(s in ("unavailable", "skipped") for s in statuses):
        return 2
    return 0


# ---------------------------------------------------------------- machine facts


def nvidia_smi() -> dict[str, str] | None:
    """Name, memory and driver of GPU 0, or None without a working nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None
    if not out:
        return None
    name, mem, driver = [x.strip() for x in out.splitlines()[0].split(",")]
    return {"name": name, "memory": mem, "driver": driver, "count": str(len(out.splitlines()))}


def tree_bytes() -> int | None:
    """Bytes of what a device call sends besides carried paths: tracked files and untracked ones
    git does not ignore (None without git)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO, capture_output=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return None
    paths = {REPO / x for x in out.decode().split("\0") if x}
    return sum(q.stat().st_size for q in paths if q.is_file())


def missing_modules(modules: list[str]) -> list[str]:
    """Those of `modules` this python cannot import (looked up, not imported)."""
    import importlib.util

    return [m for m in modules if importlib.util.find_spec(m) is None]


def cuda_scale_command(device: str, smoke: bool, result: Path) -> list[str]:
    """The cuda_scale phase's command; the dry run runs it with device cpu and smoke."""
    return [sys.executable, str(TASKS), "cuda-scale", "--device", device,
            *(["--smoke"] if smoke else []), "--result", str(result)]  # fmt: skip


def cuda_train_command(run_dir: Path, device: str, smoke: bool, result: Path) -> list[str]:
    """The cuda_train phase's command; the dry run runs it with device cpu and smoke."""
    return [sys.executable, str(TASKS), "cuda-train", "--run-dir", str(run_dir),
            "--device", device, *(["--smoke"] if smoke else []), "--result", str(result)]  # fmt: skip


def cuda_pytest_findings(junit: dict[str, Any]) -> dict[str, Any]:
    """cuda_pytest fails if a CUDA-only test skipped (a GPU machine must run them) or none ran."""
    errors = []
    cases = junit.pop("cases", [])
    cuda = [c for c in cases if any(Path(f).stem in c["classname"] for f in CUDA_TESTS)]
    if not cuda:
        errors.append(f"no test of {', '.join(CUDA_TESTS)} ran")
    skipped = [c["name"] for c in cuda if c["outcome"] == "skipped"]
    if skipped:
        errors.append(f"CUDA tests skipped on the GPU machine: {skipped}")
    junit["cuda_tests"] = {"ran": len(cuda) - len(skipped), "skipped": len(skipped)}
    return {**junit, **({"ok": False, "errors": errors} if errors else {})}


# ---------------------------------------------------------------- running phases


class Runner:
    def __init__(self, work: Path, results: Path, budget_s: float) -> None:
        self.work, self.results, self.budget_s = work, results, budget_s
        self.logs = results / "logs"
        self.t0 = time.monotonic()
        self.started_at = _now()
        self.phases: dict[str, dict[str, Any]] = {}
        self.device: str | None = None
        self.environment: dict[str, Any] = {}
        self.sources: dict[str, tuple[list[str] | None, str]] = {}  # per install phase
        self.site: Path | None = None  # where install_wheels put e3rl's deps, once it passed
        self.env_py = {"vllm": work / "venv-vllm" / "bin" / "python",
                       "verl": work / "venv-verl" / "bin" / "python"}  # fmt: skip

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    def record(
        self,
        name: str,
        status: str,
        seconds: float,
        reason: str = "",
        result=None,
        blocked_by: list[str] | None = None,
    ) -> None:
        phase = next(p for p in PLAN if p.name == name)
        self.phases[name] = {
            "status": status,
            "seconds": round(seconds, 1),
            "budget_s": phase.budget_s,
            "reason": reason,
            "log": f"logs/{name}.log",
            "result": result or {},
        }
        if blocked_by:  # the phases whose status stopped this one (see outcome())
            self.phases[name]["blocked_by"] = blocked_by
        print(f"[gpu_check] {name}: {status} in {seconds:.0f} s {reason}".rstrip(), flush=True)
        self.write(finished=False)

    def write(self, finished: bool) -> dict[str, Any]:
        summary = build_summary(
            self.phases,
            self.device,
            self.environment,
            self.started_at,
            time.monotonic() - self.t0,
            self.budget_s,
            finished,
        )
        self.results.mkdir(parents=True, exist_ok=True)
        tmp = self.results / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, self.results / "summary.json")
        out = os.environ.get("OUT")
        if out:  # the device tool brings back at most 8 files: the summary and one tarball
            shutil.copy(self.results / "summary.json", Path(out) / "summary.json")
            with tarfile.open(Path(out) / "gpu_logs.tar.gz", "w:gz") as tar:
                if self.logs.is_dir():
                    tar.add(self.logs, arcname="logs")
        return summary

    def blocked(self, phase: Phase) -> tuple[str, list[str]] | None:
        """Why `phase` cannot start (a needed phase did not pass, no time left) and the phases
        that stopped it, or None."""
        for need in phase.needs:
            st = self.phases.get(need, {}).get("status", "not run")
            if st != "passed":
                return f"needs {need} ({st})", [need]
        ok = [n for n in phase.needs_any if self.phases.get(n, {}).get("status") == "passed"]
        if phase.needs_any and not ok:
            return f"needs one of {', '.join(phase.needs_any)}", list(phase.needs_any)
        if self.left() < min(30, phase.budget_s):
            return f"time budget spent ({self.left():.0f} s left of {self.budget_s:.0f})", []
        return None

    def start(self, name: str, cmds: list[list[str]], env: dict[str, str] | None = None):
        """Starts a phase's commands (run one after another in one shell) in its own session."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed in finish)
        script = " && ".join(" ".join(_quote(a) for a in c) for c in cmds)
        log.write(f"# {script}\n")
        log.flush()
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # the whole group is killed at the deadline (Ray, vLLM)
        )
        phase = next(p for p in PLAN if p.name == name)
        deadline = time.monotonic() + min(phase.budget_s, max(self.left(), 1))
        return {"name": name, "proc": proc, "log": log, "t": time.monotonic(), "deadline": deadline}

    def finish(self, job: dict, parse: Callable[[Path], dict] | None = None) -> None:
        """Waits for a started phase until its deadline, then records it."""
        proc = job["proc"]
        try:
            rc = proc.wait(timeout=max(job["deadline"] - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        job["log"].close()
        seconds = time.monotonic() - job["t"]
        result: dict[str, Any] = {}
        res_file = self.work / f"{job['name']}.json"
        if res_file.is_file():
            try:
                result = json.loads(res_file.read_text())
            except json.JSONDecodeError as e:
                result = {"result_file_error": str(e)}
        if parse is not None:
            result.update(parse(self.logs / f"{job['name']}.log"))
        if rc != 0:  # the end of the log, so that summary.json alone says what went wrong
            text = (self.logs / f"{job['name']}.log").read_text(errors="replace")
            result["log_tail"] = text[-3000:]
        if rc is None:
            self.record(job["name"], "timeout", seconds, "killed at its time budget", result)
        elif rc != 0:
            self.record(job["name"], "failed", seconds, f"exit status {rc}", result)
        elif result.get("ok") is False:
            self.record(job["name"], "failed", seconds, "; ".join(result.get("errors", [])), result)
        else:
            self.record(job["name"], "passed", seconds, "", result)

    def run_phases(self, names: tuple[str, ...]) -> None:
        """Starts the named phases together (or those that can start), waits for all."""
        jobs = []
        for name in names:
            phase = next(p for p in PLAN if p.name == name)
            why = self.blocked(phase)
            if why:
                self.record(name, "skipped", 0.0, why[0], blocked_by=why[1])
                continue
            cmds, env, parse = self.commands(name)
            if cmds is None:
                self.record(name, "unavailable", 0.0, env["reason"])
                continue
            jobs.append((self.start(name, cmds, env), parse))
        for job, parse in jobs:
            self.finish(job, parse)

    def commands(self, name: str):
        """(commands, extra environment, log parser) of a phase; (None, {reason}, None) when it
        cannot run here."""

        def tasks(py: Path, *a: str) -> list[str]:
            return [str(py), str(TASKS), *a, "--result", str(self.work / f"{name}.json")]

        site = f"{self.site}:" if self.site else ""
        env = {
            "PYTHONPATH": f"{site}{REPO / 'src'}:{REPO / 'tests'}",
            "HF_HUB_OFFLINE": "1",
            "E3RL_CACHE": str(self.work / "cache"),
            "PYTHONUNBUFFERED": "1",
            "PIP_CACHE_DIR": str(self.work / "pip-cache"),
        }
        models = self.work / "models"
        if name == "install_wheels":
            cmds, reason = wheel_install_commands(
                self.environment.get("e3rl_deps_missing", []), self.work / f"{name}.json"
            )
            if cmds is None:
                return None, {"reason": reason}, None
            env["PYTHONPATH"] = f"{SITE}:{env['PYTHONPATH']}"
            return cmds, env, None
        if name == "cuda_train":
            return [cuda_train_command(self.work / "cuda_train", "cuda", False,
                                       self.work / f"{name}.json")], env, None  # fmt: skip
        if name == "cuda_scale":
            return [cuda_scale_command("cuda", False, self.work / f"{name}.json")], env, None
        if name == "cuda_pytest":
            junit = self.logs / "cuda_pytest.xml"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS,
                   *CORE_TESTS, f"--junitxml={junit}"]  # fmt: skip
            return [cmd], env, lambda log: cuda_pytest_findings(parse_junit(junit, cases=True))
        if name in ("install_vllm", "install_verl"):
            source, reason = self.sources[name]
            if source is None:
                return None, {"reason": reason}, None
            which = name.split("_")[1]
            pkgs = vllm_packages() if which == "vllm" else verl_packages()
            cmds = install_commands(self.work / f"venv-{which}", pkgs, source)
            cmds.append(tasks(self.env_py[which], "versions", "--env", which))
            return cmds, env, None
        if name == "prepare_model":
            passed = "verl" if self.phases["install_verl"]["status"] == "passed" else "vllm"
            return [tasks(self.env_py[passed], "prepare", "--out", str(models))], env, None
        if name == "vllm_engine_tests":
            junit = self.logs / "vllm_engine_tests.xml"
            cmd = [str(self.env_py["vllm"]), "-m", "pytest", "-q", "-m", "slow", "-p",
                   "no:cacheprovider", "tests/rollout/test_vllm.py", f"--junitxml={junit}"]  # fmt: skip
            return [cmd], env, lambda log: parse_junit(junit)
        if name == "verl_e2e":
            run = self.work / "verl_run"
            return [tasks(self.env_py["verl"], "verl-e2e", "--models", str(models),
                          "--run-dir", str(run))], env, None  # fmt: skip
        if name == "e3rl_train":
            return [tasks(self.env_py["vllm"], "train-bench", "--models", str(models),
                          "--run-dir", str(self.work / "train"))], env, None  # fmt: skip
        raise ValueError(name)

    def probe(self) -> None:
        t = time.monotonic()
        gpu = nvidia_smi()
        self.device = gpu["name"] if gpu else None
        free = shutil.disk_usage(self.work).free / 2**30
        self.sources = {
            "install_vllm": install_source(("vllm",)),
            "install_verl": install_source(("verl", "vllm", "ray")),
        }
        if free < VENV_DISK_GIB:  # the CUDA phases need little; two vLLM venvs need ~20 GB
            for k in self.sources:
                self.sources[k] = (None, f"{free:.0f} GiB free, the vLLM/verl venvs need "
                                         f"{VENV_DISK_GIB}")  # fmt: skip
        self.environment = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "gpu": gpu,
            "torch": _torch_facts(),
            "e3rl_deps_missing": missing_modules([m for m, _ in E3RL_MODULES]),
            "wheelhouse": wheel_report(),
            "install_source": {k: v[1] for k, v in self.sources.items()},
            "disk_free_gib": round(free, 1),
            "vllm_version": VLLM_VERSION,
            "verl_version": VERL_VERSION,
        }
        if gpu is None or not self.environment["torch"].get("cuda_available"):
            self.record("probe", "unavailable", time.monotonic() - t, "no usable GPU here")
        elif free < 2:
            self.record("probe", "failed", time.monotonic() - t, f"{free:.1f} GiB free, need 2")
        else:
            self.record("probe", "passed", time.monotonic() - t)

    def run(self) -> int:
        self.work.mkdir(parents=True, exist_ok=True)
        self.probe()
        if self.phases["probe"]["status"] != "passed":
            for p in PLAN[1:]:
                self.record(p.name, "skipped", 0.0, "needs probe", blocked_by=["probe"])
        else:
            # no vLLM needed: the phases most likely to give results on the lent machines
            self.run_phases(("install_wheels",))
            if self.phases["install_wheels"]["status"] == "passed" and SITE.is_dir():
                self.site = SITE  # the later phases import e3rl's deps from there
            self.run_phases(("cuda_train",))
            self.run_phases(("cuda_pytest",))
            self.run_phases(("cuda_scale",))
            self.run_phases(PARALLEL[0])
            self.run_phases(("prepare_model",))
            self.run_phases(PARALLEL[1])
            self.run_phases(("e3rl_train",))
            self.record("trl", "skipped", 0.0, "not implemented on GPU (see docs/gpu_check.md)")
        return self.write(finished=True)["exit_code"]


def _quote(a: str) -> str:
    import shlex

    return shlex.quote(a)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _torch_facts() -> dict[str, Any]:
    code = (
        "import json, torch; print(json.dumps({'version': torch.__version__, "
        "'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available()}))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as e:
        return {"error": str(e)[:200]}


def parse_junit(path: Path, cases: bool = False) -> dict[str, Any]:
    """Counts of a pytest junit file (tests, failures, errors, skipped) and failing test names;
    `cases`: also every test's classname, name and outcome."""
    if not path.is_file():
        return {}
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}

    def result(c) -> str:
        for tag in ("failure", "error", "skipped"):
            if c.find(tag) is not None:
                return tag
        return "passed"

    rows = [(c, result(c)) for c in suite.iter("testcase")]
    out: dict[str, Any] = {
        "pytest": counts,
        "failing": [c.get("name") for c, r in rows if r in ("failure", "error")],
    }
    if cases:
        out["cases"] = [
            {"classname": c.get("classname", ""), "name": c.get("name"), "outcome": r}
            for c, r in rows
        ]
    return out


# ---------------------------------------------------------------- dry run


def print_plan(budget_s: float) -> None:
    print(f"GPU check plan (time budget {budget_s:.0f} s; phases on one line run in parallel):")
    together = {n: g for g in PARALLEL for n in g}
    shown: set[str] = set()
    for p in PLAN:
        if p.name in shown:
            continue
        group = together.get(p.name, (p.name,))
        for n in group:
            q = next(x for x in PLAN if x.name == n)
            mark = "  ||" if n != group[0] else "  - "
            needs = f" [needs {', '.join(q.needs)}]" if q.needs else ""
            needs += f" [needs one of {', '.join(q.needs_any)}]" if q.needs_any else ""
            print(f"{mark} {q.name:<18} {q.budget_s:>4} s  {q.what}{needs}")
            shown.add(n)
    longest = sum(
        max(next(x for x in PLAN if x.name == n).budget_s for n in together.get(p.name, (p.name,)))
        for p in PLAN
        if p.name not in together or together[p.name][0] == p.name
    )
    print(f"  sum of the phases' budgets along the critical path: {longest} s")


class Warning_(Exception):
    """A dry-run finding that does not stop the run (reported as [warn], exit status 0)."""


def dry_run(work: Path, budget_s: float) -> int:
    """Prints the plan and checks what can be checked without a GPU; 0 only if none fails
    (warnings: the GPU run will record a phase as unavailable)."""
    print_plan(budget_s)
    checks: list[tuple[str, str, str]] = []

    def check(name: str, fn: Callable[[], str]) -> None:
        try:
            checks.append((name, "ok", fn()))
        except Warning_ as w:
            checks.append((name, "warn", str(w)))
        except Exception as e:  # a check's failure is reported, the others still run
            checks.append((name, "FAIL", f"{type(e).__name__}: {e}"))

    check("python", lambda: _python_ok())
    check("tools", lambda: _tools_ok())
    check("disk", lambda: _disk_ok(work))
    check("tasks helper", lambda: _run_tasks_check())
    check("wheelhouse", lambda: _wheelhouse_ok())
    check("carry size", lambda: _carry_ok())
    check("cuda_train smoke (cpu, 3 steps, 4 variants)", lambda: _cuda_smoke(work))
    check("cuda_scale smoke (cpu, 2 layers, 4 variants)", lambda: _scale_smoke(work))
    check("cuda_pytest files", lambda: _pytest_files_ok())
    for phase, needs in (("install_vllm", ("vllm",)), ("install_verl", ("verl", "vllm", "ray"))):
        src, where = install_source(needs)
        note = "" if src is not None else " (the GPU run records it unavailable)"
        checks.append((f"{phase} source", "ok", where + note))
    gpu = nvidia_smi()
    checks.append(("gpu", "ok", gpu["name"] if gpu else "none here (a dry run needs none)"))
    print("\nprerequisites:")
    for name, status, msg in checks:
        print(f"  [{status}] {name}: {msg}")
    failed = [n for n, st, _ in checks if st == "FAIL"]
    print(
        "dry run: " + ("all prerequisites pass" if not failed else f"FAILED: {', '.join(failed)}")
    )
    return 1 if failed else 0


def _wheelhouse_ok() -> str:
    rep = wheel_report()
    if rep["path"] is None:
        raise Warning_(
            "no .whl/ (or $E3RL_WHEELHOUSE): `make gpu-wheels` before a device call, else"
            " install_wheels is unavailable where math-verify is missing"
        )
    problems = [f"missing {rep['missing']}"] if rep["missing"] else []
    problems += [f"two versions of {rep['twice']}"] if rep["twice"] else []
    if problems:
        raise RuntimeError(f"{rep['path']}: {'; '.join(problems)} (scripts/gpu_wheels.txt)")
    extra = f", also {rep['extra']}" if rep["extra"] else ""
    return f"{rep['path']}: {len(rep['wheels'])} wheels, {rep['bytes'] / 2**20:.2f} MiB{extra}"


def _carry_ok(limit_mib: float = CARRY_LIMIT_MIB * 0.75) -> str:
    tree = tree_bytes()
    if tree is None:
        raise Warning_("no git here: the working tree's size is not known")
    wheels = wheel_report()["bytes"]
    total = (tree + wheels) / 2**20
    msg = (f"working tree {tree / 2**20:.2f} MiB + .whl {wheels / 2**20:.2f} MiB = {total:.2f}"
           f" MiB of the {CARRY_LIMIT_MIB} MiB a device call carries")  # fmt: skip
    if total > limit_mib:
        raise RuntimeError(f"{msg}: over {limit_mib:.0f} MiB")
    return msg


def _cuda_smoke(work: Path) -> str:
    """cuda_train's own command on CPU, 3 steps of each variant: its command line, configs and
    result file work, and its log-prob and temperature checks pass on those steps (the first GPU
    run found the temperature check reading a row the dry run's single step never wrote)."""
    run = work / "dry-cuda"
    shutil.rmtree(run, ignore_errors=True)  # the trainer refuses to overwrite a run
    result = work / "dry-cuda.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}",
           "E3RL_CACHE": str(work / "dry-cache")}  # fmt: skip
    out = subprocess.run(cuda_train_command(run, "cpu", True, result), capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=300)  # fmt: skip
    return _smoke_verdict(out, result)


def _scale_smoke(work: Path) -> str:
    """cuda_scale's own command on CPU with 2 layers: its command line and checks work."""
    result = work / "dry-scale.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(cuda_scale_command("cpu", True, result), capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=300)  # fmt: skip
    return _smoke_verdict(out, result)


def _smoke_verdict(out: subprocess.CompletedProcess, result: Path) -> str:
    """A smoke run's outcome: its checks' own errors where it wrote them, else its stderr."""
    found = json.loads(result.read_text()) if result.is_file() else None
    if found and found["errors"]:
        raise RuntimeError("; ".join(found["errors"])[:2000])
    if out.returncode != 0 or not found:
        raise RuntimeError(f"exit {out.returncode}: {out.stderr.strip()[-2000:]}")
    variants = found["variants"]
    return f"{len(variants)} variants ran and passed ({', '.join(variants)})"


def _pytest_files_ok() -> str:
    """cuda_pytest's files are there (collecting them would cost another torch import here)."""
    missing = [f for f in CUDA_TESTS + CORE_TESTS if not (REPO / f).is_file()]
    if missing:
        raise RuntimeError(f"missing {missing}")
    return f"{len(CUDA_TESTS)} CUDA-only + {len(CORE_TESTS)} core test files"


def _python_ok() -> str:
    major, minor = sys.version_info[:2]
    if (major, minor) < (3, 10) or (major, minor) > (3, 12):  # verl 0.9.1: <3.13
        raise RuntimeError(f"python {sys.version.split()[0]}: the check needs 3.10 to 3.12")
    return sys.version.split()[0]


def _tools_ok() -> str:
    missing = [t for t in ("bash", "tar") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"missing {missing}")
    import venv  # noqa: F401 (the install phases create venvs)

    return "bash, tar, venv"


def _disk_ok(work: Path) -> str:
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free / 2**30
    if free < 2:
        raise RuntimeError(f"{free:.1f} GiB free under {work}, the CUDA phases need 2")
    if free < VENV_DISK_GIB:
        raise Warning_(f"{free:.0f} GiB free under {work}: the vLLM/verl venvs need about "
                       f"{VENV_DISK_GIB} (unavailable there)")  # fmt: skip
    return f"{free:.0f} GiB free under {work}"


def _run_tasks_check() -> str:
    """The helper's own CPU checks (e3rl imports, configs, verl overrides) in this python."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, str(TASKS), "dry-run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    print(out.stdout, end="")
    if out.returncode != 0:
        raise RuntimeError(f"exit {out.returncode}: {out.stderr.strip()[-2000:]}")
    return "passed"


def print_wheel_report(limit_mib: float) -> int:
    print(json.dumps(wheel_report(), indent=2))
    status = 0
    for name, fn in (("wheelhouse", _wheelhouse_ok), ("carry size", lambda: _carry_ok(limit_mib))):
        try:
            print(f"[ok] {name}: {fn()}")
        except Exception as e:
            print(f"[{'warn' if isinstance(e, Warning_) else 'FAIL'}] {name}: {e}")
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the plan, check prerequisites")
    ap.add_argument("--budget", type=float, default=560, help="seconds for the whole run")
    ap.add_argument(
        "--work", type=Path, default=Path(os.environ.get("GPU_CHECK_WORK", "/tmp/e3rl-gpu"))
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--wheel-report", action="store_true",
                    help=".whl/ against scripts/gpu_wheels.txt and the carry size; exit 1 if off")  # fmt: skip
    ap.add_argument("--limit-mib", type=float, default=CARRY_LIMIT_MIB * 0.75,
                    help="--wheel-report: most MiB the tree and .whl may take together")  # fmt: skip
    args = ap.parse_args(argv)
    if args.budget <= 0:
        ap.error(f"--budget must be > 0 seconds, got {args.budget}")
    if args.wheel_report:
        return print_wheel_report(args.limit_mib)
    if args.dry_run:
        return dry_run(args.work, args.budget)
    return Runner(args.work, args.results, args.budget).run()


if __name__ == "__main__":
    sys.exit(main())
