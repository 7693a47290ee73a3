# Two commands on a fresh machine (Python 3.11, pip, no GPU):
#   make demo   set up .venv, then run the demo pipeline on the embedded defaults
#   make test   set up .venv, then run the test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench clean

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

clean:
	rm -rf $(VENV) outputs .pytest_cache
