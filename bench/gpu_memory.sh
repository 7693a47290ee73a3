#!/usr/bin/env bash
# The memory run (bench/gpu_memory.py, docs/gpu-memory.md) on a machine with one CUDA GPU and only torch +
# transformers installed, with the wheels `make gpu-smoke-wheels` fetches: a few minutes on one H100.
#
#   bench/gpu_memory.sh                    exit 0: every check passed; 1: one failed
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/gpu_wheels.sh
exec "$PYTHON" bench/gpu_memory.py "$@"
