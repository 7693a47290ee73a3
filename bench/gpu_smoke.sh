#!/usr/bin/env bash
# The GPU smoke run (bench/gpu_smoke.py) on a machine with one CUDA GPU and only torch + transformers
# installed: under 8 minutes, one PASS / FAIL / skipped line per part.
#
# What else it needs comes from the wheels `make gpu-smoke-wheels` fetches (GPU_PYTHON=3.12 by default: the GPU
# machine's Python), installed by bench/gpu_wheels.sh. vLLM and Ray are used when installed, skipped otherwise.
#
#   bench/gpu_smoke.sh                     exit 0: all parts that ran passed; 1: one failed; 3: no CUDA GPU
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/gpu_wheels.sh
exec "$PYTHON" bench/gpu_smoke.py "$@"
