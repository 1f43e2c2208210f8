# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# .python-version pins 3.12 for pyenv; elsewhere any python3.12 on PATH will do.
PYTHON ?= $(shell command -v python3.12 2>/dev/null || command -v python3)
STAMP := $(VENV)/.installed

.PHONY: all demo test test-slow lint format bench clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else "diffisp needs Python >= 3.12 (found " + sys.version.split()[0] + "); install it or set PYTHON=/path/to/python3.12")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,export,torch]'
	# jax2onnx without its dependencies: see the export extra in pyproject.toml for why.
	$(BIN)/python -m pip install --quiet --no-deps jax2onnx==0.17.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/diffisp demo

# pytest exits 5 when it collects nothing: for either suite that means its tests vanished.
PYTEST_OR_FAIL_IF_EMPTY = rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the $(1) suite is missing" >&2; exit 1; fi; \
	exit $$rc

# The fast suite: everything except the tests marked slow (end-to-end trainings).
test: $(STAMP) lint
	@$(BIN)/python -m pytest -q -m "not slow" -n 2; $(call PYTEST_OR_FAIL_IF_EMPTY,fast)

# The slow suite: the tests marked slow (full protocol trainings, resume after a kill, ...).
# --dist loadfile: a file's tests share one module-scoped training, which runs once per worker.
test-slow: $(STAMP)
	@$(BIN)/python -m pytest -q -m slow -n 2 --dist loadfile; $(call PYTEST_OR_FAIL_IF_EMPTY,slow)

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/ruff format --check src tests $(wildcard benchmarks)

format: $(STAMP)
	$(BIN)/ruff format src tests $(wildcard benchmarks)
	$(BIN)/ruff check --fix src tests $(wildcard benchmarks)

bench: $(STAMP)
	$(BIN)/diffisp bench

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
