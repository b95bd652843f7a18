# charlm: make install | test | lint | train | bench
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
# PyTorch is installed first, on its own, only when the venv has none. `pip install torch` from PyPI is the
# CUDA build on Linux (several GB); on a machine without a GPU, ask for the CPU build from PyTorch's CPU index:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (left empty, pip's configured index decides: here that index serves the CPU wheel of torch 2.13.0)
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
CONFIG  ?= configs/jaychou-lstm.yaml

.PHONY: install test lint train bench clean compat shake

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@echo "installed: activate with 'source $(VENV)/bin/activate' or run $(VENV)/bin/charlm"

test:
	$(PY) -m pytest -q

# the suite as other machines run it: one thread, pinned to one core, and in three random orders
SEEDS ?= 1 2 3
shake:
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider
	taskset -c 0 $(PY) -m pytest -q -p no:cacheprovider
	for seed in $(SEEDS); do $(PY) -m pytest -q -p no:cacheprovider --random-order-seed=$$seed || exit 1; done

lint:
	$(VENV)/bin/ruff check charlm tests benchmarks

train:
	$(VENV)/bin/charlm train --config $(CONFIG)

# the suite against other releases, in a venv of its own: make compat TORCH=torch==2.2.2 PINS="typer==0.12.0 rich==13.0.0"
# (PIP_CONSTRAINT=/dev/null lifts a machine-wide pip cap on torch, where one is set; PyPI's Linux wheels are CUDA builds)
COMPAT_VENV ?= .venv-compat
PINS        ?=
compat:
	rm -rf $(COMPAT_VENV) && $(PYTHON) -m venv $(COMPAT_VENV)
	PIP_CONSTRAINT=/dev/null $(COMPAT_VENV)/bin/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	PIP_CONSTRAINT=/dev/null $(COMPAT_VENV)/bin/pip install -q -e ".[dev]" "$(TORCH)" $(PINS)
	$(COMPAT_VENV)/bin/python -c "import torch, typer, rich, numpy; print('compat:', torch.__version__, 'typer', \
	  typer.__version__, 'rich', __import__('importlib.metadata').metadata.version('rich'), 'numpy', numpy.__version__)"
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider

bench:
	$(PY) benchmarks/bench.py --json benchmarks/results.json

clean:
	rm -rf runs .pytest_cache .ruff_cache
