#!/usr/bin/env bash
# The GPU smoke run (bench/gpu_smoke.py) on a machine with one CUDA GPU and only torch + transformers
# installed: under 8 minutes, one PASS / FAIL / skipped line per part.
#
# What else it needs (DeepSpeed, pydantic, PyYAML, …: small wheels, none over a few MB) comes from a wheel
# folder, by default .wheels/gpu-smoke, which `make gpu-smoke-wheels` fills on a machine with pip access
# (GPU_PYTHON=3.12 by default: the GPU machine's Python). The wheels are installed into .wheels/site, not into
# the machine's Python, and put first on PYTHONPATH. vLLM and Ray are used when installed, skipped otherwise.
#
#   bench/gpu_smoke.sh                     exit 0: all parts that ran passed; 1: one failed; 3: no CUDA GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.wheels/gpu-smoke}
SITE=.wheels/site
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu-smoke: no wheels in $WHEELS (make gpu-smoke-wheels); using what $PYTHON has installed"
fi
export TOKENIZERS_PARALLELISM=false DS_BUILD_OPS=0
exec "$PYTHON" bench/gpu_smoke.py "$@"
