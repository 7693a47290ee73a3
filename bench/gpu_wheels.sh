# Sourced by bench/gpu_smoke.sh and bench/gpu_memory.sh on a GPU machine with only torch and transformers
# installed: installs the small wheels `make gpu-smoke-wheels` fetched (WHEELS, by default .wheels/gpu-smoke:
# DeepSpeed, pydantic, PyYAML, …, none over a few MB) into .wheels/site, not into the machine's Python, and puts
# that folder first on PYTHONPATH. Runs from the repository root; PYTHON is the interpreter (python3).
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.wheels/gpu-smoke}
SITE=.wheels/site
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no wheels in $WHEELS (make gpu-smoke-wheels); using what $PYTHON has installed"
fi
export TOKENIZERS_PARALLELISM=false DS_BUILD_OPS=0
