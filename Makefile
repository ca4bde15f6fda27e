# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-slow demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is the CPU build available offline; a bare `torch` would pull CUDA.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The suite, then the layer contract of the package (import-linter; see pyproject.toml).
test: $(STAMP)
	$(PY) -m pytest -q
	$(VENV)/bin/lint-imports

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

demo: $(STAMP)
	$(PY) -m invprob demo --threads 1

bench: $(STAMP)
	$(PY) -m invprob bench --out runs/bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
