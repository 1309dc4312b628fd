# `make test`, `make demo` and `make bench` set up a local virtualenv on first use, each
# installing the extras it needs (one stamp per extra, so running one after another adds
# only what is missing). TORCH_SPEC picks the PyTorch build. The default pin, torch==2.13.0,
# resolves to the CPU build only where a local wheel or a CPU index provides it; on a plain
# index it resolves to a CUDA build of several GB on Linux. For the CPU build, pass pip the CPU
# wheel index that PyTorch's install page gives: make PIP_EXTRA="--index-url <CPU index>" test.
# `make TORCH_SPEC=torch test` takes the newest release.
#
# softhist's native CPU kernels (csrc/) compile during the install, against the torch already
# in the virtualenv (--no-build-isolation: otherwise pip would fetch a second torch to build
# with). Without a C++ compiler the install still succeeds and softhist runs on its torch engine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=

.PHONY: test demo bench bench-gpu figures clean check-native

$(VENV)/.torch: Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)" "setuptools>=70.1"
	touch $@

# softhist (editable) with one extra: .installed-test, .installed-demo, .installed-bench.
$(VENV)/.installed-%: pyproject.toml setup.py $(wildcard csrc/*) $(VENV)/.torch
	$(PY) -m pip install --quiet --no-build-isolation -e ".[$*]"
	touch $@

# The second run checks the fused Triton kernels on CPU, in Triton's interpreter
# (TRITON_INTERPRET must be set before triton is imported, hence a separate process).
# -n auto --dist worksteal: one worker per core; an idle worker takes tests queued for a busy one.
test: $(VENV)/.installed-test
	$(PY) -m pytest -n auto --dist worksteal
	TRITON_INTERPRET=1 $(PY) -m pytest -n auto --dist worksteal tests/test_backends.py

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

# The native sources compile warning-free (-Wall -Wextra -Werror) with GCC and clang, where installed.
check-native: $(VENV)/.torch
	@for cxx in g++ clang++; do \
	  command -v $$cxx >/dev/null || { echo "$$cxx: not installed, skipped"; continue; }; \
	  for src in csrc/*.cpp; do \
	    $$cxx -c -o /dev/null -O3 -std=c++17 -fopenmp-simd -fno-trapping-math -DTORCH_TARGET_VERSION=0x020a000000000000 \
	      -Wall -Wextra -Werror -isystem "$$($(PY) -c 'import torch.utils.cpp_extension as c; print(c.include_paths()[0])')" \
	      -isystem "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" $$src || exit 1; \
	  done; echo "$$cxx: csrc/ compiles cleanly"; \
	done

clean:
	rm -rf $(VENV) build src/*.egg-info src/softhist/_C*.so .pytest_cache demo-output bench-gpu.csv
