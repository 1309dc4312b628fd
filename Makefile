# `make test`, `make demo` and `make bench` set up a local virtualenv on first use, each
# installing the extras it needs (one stamp per extra, so running one after another adds
# only what is missing). TORCH_SPEC picks the PyTorch release: torch==2.13.0, which a plain
# PyPI index on Linux serves as a CUDA build; TORCH_PIP_ARGS="--index-url
# https://download.pytorch.org/whl/cpu" takes the CPU build. `make TORCH_SPEC=torch test`
# takes the newest release.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: test demo bench bench-gpu figures clean

$(VENV)/.torch: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	touch $@

# softhist (editable) with one extra: .installed-test, .installed-demo, .installed-bench.
$(VENV)/.installed-%: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

# The second run checks the fused Triton kernels on CPU, in Triton's interpreter
# (TRITON_INTERPRET must be set before triton is imported, hence a separate process).
test: $(VENV)/.installed-test
	$(PY) -m pytest
	TRITON_INTERPRET=1 $(PY) -m pytest tests/test_backends.py

demo: $(VENV)/.installed-demo
	$(VENV)/bin/softhist demo --out demo-output

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/bench_histogram.py

# On a CUDA machine: the Triton backend against the torch backend on the GPU, then the GPU table.
# Needs a CUDA build of torch: `make TORCH_SPEC=torch bench-gpu` in a fresh checkout.
bench-gpu: $(VENV)/.installed-test $(VENV)/.installed-bench
	$(PY) -m pytest tests/test_backends.py
	$(PY) benchmarks/bench_histogram.py --device cuda --csv bench-gpu.csv

# The README's pictures: docs/demo.png, docs/kernels.png, docs/bench.png.
figures: $(VENV)/.installed-demo $(VENV)/.installed-bench
	$(PY) scripts/make_figures.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache demo-output bench-gpu.csv
