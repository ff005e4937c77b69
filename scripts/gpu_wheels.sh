#!/usr/bin/env bash
# Downloads the wheels of scripts/gpu_wheels.txt into .whl/ (gitignored) for the lent GPU
# machines, which reach no package index: the device tool carries .whl (carry [".whl"]) and
# scripts/gpu_check.py installs it there with --no-index --no-deps --target /tmp/site.
# The recipe is /work/.library/device/README.md's: CPython 3.12, manylinux x86-64, no deps.
#
#   bash scripts/gpu_wheels.sh            # or: make gpu-wheels
#   PY=/path/to/python bash scripts/gpu_wheels.sh
#
# Then it checks that what a call carries (tracked files + untracked not ignored + .whl) stays
# under LIMIT_MIB (default 48 of the tool's 64 MiB) and exits 1 if not.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PY:-python3}"
LIMIT_MIB="${LIMIT_MIB:-48}"
mapfile -t PINS < <(grep -v '^\s*#' scripts/gpu_wheels.txt | grep -v '^\s*$')
mkdir -p .whl
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${PINS[@]}"
# what gpu_check.py checks in its dry run: every pin present once, the total size
"$PY" scripts/gpu_check.py --wheel-report --limit-mib "$LIMIT_MIB"
