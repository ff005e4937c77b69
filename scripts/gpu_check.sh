#!/usr/bin/env bash
# The GPU check of e3rl (docs/gpu_check.md): vLLM engine tests, verl end to end with the e3rl
# adapter, e3rl step time and rollout throughput with the hf and vllm engines, on one GPU in at
# most ~10 minutes. Writes benchmarks/results/gpu/summary.json (after every phase) and logs/.
#
#   bash scripts/gpu_check.sh --dry-run    # any machine: plan + prerequisites, exit 0 if all pass
#   bash scripts/gpu_check.sh              # on a GPU machine (installs into $GPU_CHECK_WORK)
#   bash scripts/gpu_check.sh --budget 360 # whole-run time budget in seconds (default 560)
#
# Exit status: 0 all phases passed, 1 a phase failed or timed out, 2 a phase could not run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The machine's own python3 (on the lent H200 machines the one with CUDA torch); the checks run in
# virtual environments made on top of it.
PY="${GPU_CHECK_PYTHON:-python3}"
command -v "$PY" >/dev/null || { echo "gpu_check: $PY not found (set GPU_CHECK_PYTHON)" >&2; exit 2; }
exec "$PY" scripts/gpu_check.py "$@"
