#!/usr/bin/env bash
# The one prepared GPU check (issue 16): run from the repository root on a CUDA machine, offline.
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# Uses the machine's python3 (with torch); packages it lacks travel as wheels in .whl/ (see
# benchmarks/README.md). Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check_logs.txt.
set -uo pipefail
out=${1:-${OUT:-$PWD/gpu_check_out}}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/iqa-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/iqa-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"
timeout 480 python3 -m benchmarks.gpu_check --out "$out/gpu_check.json"
