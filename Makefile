# One-command setup: a virtual environment in .venv with torch pinned to the local CPU wheel
# (constraints.txt), the package in editable mode (numba, the fused CPU renderer, comes with it),
# and the extras the demo, the tests and the docs use (test, gpu, dask, docs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt

# The test suite runs in this many pytest-xdist worker processes (2 on the 2-core CI machine:
# most tests use one core, and the kernels' first compile is single-threaded).
TEST_WORKERS ?= 2

.PHONY: setup demo lint test test-all docs docs-serve bench-install clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,gpu,dask,docs]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/stereodrr demo -o out/demo

# Static checks (configured in pyproject.toml): ruff on the code, tests, studies and tutorials; mypy on the package.
lint: setup
	$(VENV)/bin/ruff check stereodrr tests experiments docs/tutorials
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS)

test-all: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m ""

# The documentation site (mkdocs.yml, docs/): site/ is the built HTML. `make test` builds it too
# (tests/test_docs.py, with --strict: a broken link or reference fails).
docs: setup
	$(VENV)/bin/mkdocs build --strict

docs-serve: setup
	$(VENV)/bin/mkdocs serve

# Peers for experiments/benchmark_renderer.py: nanodrr and diffdrr's runtime imports come with
# the `bench` extra; diffdrr declares torchvision (no CPU wheel here, used only by its metrics),
# so it is installed without dependencies.
bench-install: setup
	$(PIP) -e '.[test,gpu,dask,docs,bench]'
	$(PIP) --no-deps diffdrr==0.6.1

clean:
	rm -rf $(VENV) out site
