# charlm: make install | test | lint | docs | train | bench
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

.PHONY: install test test-slow test-all lint docs train bench clean compat compat-oldest shake

install:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	@echo "installed: activate with 'source $(VENV)/bin/activate' or run $(VENV)/bin/charlm"

# two workers (pytest-xdist), one thread each; the tests marked slow (the longest end-to-end runs, about half
# the suite's time) and the soak loop are left out so that CI stays under 10 minutes: make test-slow runs them
test:
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not soak and not slow" -n 2

test-slow:
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "slow" -n 2

test-all:
	$(PY) -m pytest -q

# the suite as other machines run it: one thread, pinned to one core, and in three random orders
SEEDS ?= 1 2 3
shake:
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider
	taskset -c 0 $(PY) -m pytest -q -p no:cacheprovider
	for seed in $(SEEDS); do $(PY) -m pytest -q -p no:cacheprovider --random-order-seed=$$seed || exit 1; done

lint:
	$(VENV)/bin/ruff check charlm tests benchmarks docs/notebooks
	$(VENV)/bin/ruff format --check charlm tests benchmarks

# the user guide (docs/, mkdocs.yml) as a static site in site/; --strict: a broken link or anchor fails
docs:
	$(PY) -c "import mkdocs, material" 2>/dev/null || $(PY) -m pip install -q -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

train:
	$(VENV)/bin/charlm train --config $(CONFIG)

# the suite against other releases, in a venv of its own per torch release (.venv-compat-2.5.1, ...):
#   make compat TORCH=torch==2.15.0 PINS="typer==0.29.2"    the releases named, the newest of the rest
#   make compat-oldest                                     the lower bounds in pyproject.toml, every one pinned
# (PIP_CONSTRAINT=/dev/null lifts a machine-wide pip cap on torch, where one is set; PyPI's Linux wheels are CUDA builds)
COMPAT_VENV ?= .venv-compat-$(word 2,$(subst ==, ,$(TORCH)))
PINS        ?=
# pyproject's `name>=X` dependencies as `name==X`
OLDEST = $(shell $(PYTHON) -c "import re; t = open('pyproject.toml').read().split('dependencies = [')[1].split(']')[0]; \
  print(' '.join(n + '==' + v for n, v in re.findall(r'\"([A-Za-z0-9_.-]+)>=([0-9.]+)', t)))")
compat:
	rm -rf $(COMPAT_VENV) && $(PYTHON) -m venv $(COMPAT_VENV)
	PIP_CONSTRAINT=/dev/null $(COMPAT_VENV)/bin/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	PIP_CONSTRAINT=/dev/null $(COMPAT_VENV)/bin/pip install -q -e ".[dev]" "$(TORCH)" $(PINS)
	$(COMPAT_VENV)/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE \
	  '^(torch|typer|click|rich|numpy|pyyaml|safetensors|filelock)==' | tr '\n' ' ' && echo
	$(COMPAT_VENV)/bin/python -m pytest -q -p no:cacheprovider

compat-oldest:
	$(MAKE) compat TORCH="$(filter torch==%,$(OLDEST))" PINS="$(filter-out torch==%,$(OLDEST))"

bench:
	$(PY) benchmarks/bench.py --json benchmarks/results.json

clean:
	rm -rf runs site .pytest_cache .ruff_cache
