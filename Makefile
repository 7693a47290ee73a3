# Two commands on a fresh machine (Python 3.11, pip, no GPU):
#   make demo   set up .venv, then run the demo pipeline on the embedded defaults
#   make test   set up .venv, then run the test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean gpu-smoke-wheels

setup: $(STAMP)

# torch first: anything that depends on torch installed before it would pull a multi-GB CUDA build.
$(STAMP): requirements-cpu.txt requirements-common.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements-cpu.txt
	$(PIP) install -q --no-deps rbo==0.1.3
	$(PIP) install -q --no-deps -e .
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec triton || true
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/reasonrank demo

test: $(STAMP)
	$(PY) -m pytest tests

bench: $(STAMP)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

# Wheels for bench/gpu_smoke.sh on a GPU machine that has torch and transformers only: the small packages the
# GPU paths import, for that machine's Python (GPU_PYTHON), and DeepSpeed built here as a pure-Python wheel.
GPU_PYTHON ?= 3.12
GPU_SMOKE_WHEELS := .wheels/gpu-smoke
gpu-smoke-wheels: $(STAMP)
	$(PIP) download -q --no-deps -d $(GPU_SMOKE_WHEELS) --only-binary=:all: --implementation cp \
	  --python-version $(GPU_PYTHON) --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 \
	  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types typing-inspection pyyaml==6.0.3 fsspec==2026.9.0 \
	  accelerate==1.15.0 hjson msgpack ninja psutil py-cpuinfo einops nvidia-ml-py rbo==0.1.3 \
	  pytrec-eval-terrier==0.5.11
	DS_BUILD_OPS=0 $(PIP) wheel -q --no-deps --no-build-isolation -w $(GPU_SMOKE_WHEELS) deepspeed==0.19.8
	du -sh $(GPU_SMOKE_WHEELS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
