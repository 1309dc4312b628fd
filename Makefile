# `make test` and `make bench` set up a local virtualenv on first use.
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel; `make TORCH_SPEC=torch test`
# takes the newest release (a CUDA build on Linux).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0

.PHONY: test bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_histogram.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
