# charlm: make install | test | lint | train | bench
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
# The CPU build of PyTorch: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0
CONFIG  ?= configs/jaychou-lstm.yaml

.PHONY: install test lint train bench clean

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@echo "installed: activate with 'source $(VENV)/bin/activate' or run $(VENV)/bin/charlm"

test:
	$(PY) -m pytest -q

lint:
	$(VENV)/bin/ruff check charlm tests benchmarks

train:
	$(VENV)/bin/charlm train --config $(CONFIG)

bench:
	$(PY) benchmarks/bench.py --json benchmarks/results.json

clean:
	rm -rf runs .pytest_cache .ruff_cache
