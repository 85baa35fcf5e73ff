# Two commands do all the setup on a fresh machine:
#   make quickstart   char-blind T5 vs char-aware ByT5 on WikiSpell, 8-device CPU mesh
#   make test         the test suite on 8 fake CPU devices
#   make test-fast    the same without the slow, parity (torch) and multihost files
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.t5pod-installed

.PHONY: quickstart test test-fast lint clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first (from local disk where present) so nothing pulls a CUDA one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu $(PY) -m tools.quickstart

# two workers, one per core; a file stays on one worker so its module fixtures build once
test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu $(PY) -m pytest tests -n 2 --dist loadfile

# a quicker loop while editing: without the files tests/markers.py marks slow, parity or
# multihost (CI runs `make test`, every file)
test-fast: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu $(PY) -m pytest tests -m "not slow and not parity and not multihost" -n 2 --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
